#!/usr/bin/env python
"""First-run text encoding of a CDAM vocabulary: full 77-token context (``encode_text`` in batches, as before)
versus the truncated causal encoding of ``TextEmbedder`` (prompts sorted by length, each batch cut at its
longest prompt), in one run.

Default: VOC (21 names) + the 80 ATP words, x 80 templates = 8080 prompts, ViT-B/16 text tower with random
weights, CPU. The truncated encoder embeds all prompts; the full-context encoder costs the same for every
prompt (77 tokens each), so it runs on ``--full-prompts`` of them (whole batches) and its time is scaled to
all prompts (``--full-prompts 0``: all of them). Rows alternate over ``--rounds``; the ratio is taken between
best rounds. The per-prompt features of the prompts both encoders embedded are compared.

    python benchmarks/bench_text_encoding.py [--threads N] [--rounds 2] [--full-prompts 512]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cdam_d2.cdam.modeling import TextEmbedder, build_clip, load_templates  # noqa: E402
from cdam_d2.cdam.modeling.text_bank import CausalTextTower  # noqa: E402
from cdam_d2.cdam.modeling.vocabulary import atp_words, read_class_names_file  # noqa: E402

BATCH = 256


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--names", default="voc21.txt", help="class-name file (the 80 ATP words are added)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--full-prompts", type=int, default=2 * BATCH)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, identity = build_clip(args.model, "random")
    names = list(read_class_names_file(args.names).queries) + atp_words()
    templates = load_templates()
    prompts = [template.replace("{}", name) for name in names for template in templates]
    tokens = tokenizer(prompts)
    full_count = len(prompts) if args.full_prompts <= 0 else min(len(prompts), args.full_prompts)
    full_tokens = tokens[torch.linspace(0, len(prompts) - 1, full_count).long()]  # spread over the names
    tower = CausalTextTower.of(model)
    positions = tower.pooled_positions(tokens)
    lengths = positions.sort().values + 1
    batch_lengths = [int(lengths[start:start + BATCH].max()) for start in range(0, len(prompts), BATCH)]
    embedder = TextEmbedder(model, tokenizer, identity, templates, cache_dir=None, batch_size=BATCH,
                            progress=False)
    print(f"{args.model} random weights, {len(names)} names x {len(templates)} templates = {len(prompts)} prompts, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"prompt length (tokens up to end-of-text): mean {lengths.float().mean():.1f}, max {int(lengths.max())}; "
          f"batch lengths after sorting: mean {sum(batch_lengths) / len(batch_lengths):.1f} of context "
          f"{tokens.shape[1]}")
    full_times, truncated_times = [], []
    for round_index in range(args.rounds):
        start = time.perf_counter()
        full = torch.cat([model.encode_text(full_tokens[i:i + BATCH]) for i in range(0, full_count, BATCH)])
        full_times.append((time.perf_counter() - start) * len(prompts) / full_count)
        start = time.perf_counter()
        embedder(names)
        truncated_times.append(time.perf_counter() - start)
        print(f"round {round_index + 1}: full context {full_times[-1]:.1f} s (scaled from {full_count} prompts), "
              f"truncated {truncated_times[-1]:.1f} s", flush=True)
    truncated = tower.encode(full_tokens, tower.pooled_positions(full_tokens))
    difference = (F.normalize(truncated, dim=-1) - F.normalize(full, dim=-1)).abs().max().item()
    print(f"first-run text encoding of all {len(prompts)} prompts: full context {min(full_times):.1f} s, "
          f"truncated {min(truncated_times):.1f} s, ratio {min(full_times) / min(truncated_times):.2f}x "
          f"(per-round {', '.join(f'{f / t:.2f}x' for f, t in zip(full_times, truncated_times))}); "
          f"max difference of normalized prompt features {difference:.1e}")


if __name__ == "__main__":
    main()
