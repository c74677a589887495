"""The 2025 bases SC-CLIP (``sc_clip``) and ResCLIP (``resclip``).

Their first passes are checked against straightforward re-computations written here from the methods'
descriptions (loops over heads, pairs and patches, float64) on small random open_clip towers; CDAM's two
second-pass modes on top of them; their protocol configs through Detectron2.
"""
import copy
import math
import os
import tempfile
import unittest
from collections import Counter
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import yaml

from cdam_d2.cdam.modeling import DenseCLIPEncoder, cdam_attention
from cdam_d2.cdam.modeling.pamr import refine_masks
from tests.helpers import CDAM_TOY_CONFIG, REPO, RegisteredToyDatasets, requires_detectron2, slow, toy_cfg

PEERS = ("sc_clip", "resclip")
DATASETS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171", "cityscapes19", "ade20k150")
# The tiny test tower has 3 blocks: layer keys that fit it.
TINY_LAYERS = {"sc_clip": ("MODEL.CDAM.SC_CLIP.PRE_ADJUST_LAYER", "1", "MODEL.CDAM.SC_CLIP.POST_ADJUST_LAYER", "0",
                           "MODEL.CDAM.SC_CLIP.MULTI_LEVEL_LAYERS", "(0, 2)"),
               "resclip": ("MODEL.CDAM.RESCLIP.RCS_LAYERS", "(0, 2)",)}
SC_CLIP_LAYERS = {"pre_adjust_layer": 2, "post_adjust_layer": 1, "multi_level_layers": (1, 4), "cls_weight": 0.3}


def small_tower(layers=5, seed=0):
    """float64 image tower of a ViT-B/16-shaped open_clip CLIP with ``layers`` narrow blocks (4 heads), its
    LayerNorms and biases randomised as well."""
    config = copy.deepcopy(open_clip.get_model_config("ViT-B-16"))
    config["vision_cfg"].update(layers=layers, width=64, head_width=16)
    config["text_cfg"].update(layers=1, width=32, heads=2)
    config["embed_dim"] = 32
    torch.manual_seed(seed)
    visual = open_clip.CLIP(**config).visual.double().eval()
    with torch.no_grad():
        for name, parameter in visual.named_parameters():
            if "ln" in name and name.endswith("weight"):
                parameter.add_(0.1 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.add_(0.05 * torch.randn_like(parameter))
            elif name.endswith("in_proj_weight"):
                parameter.mul_(3.0)  # peaked attention maps
    return visual


def smooth_images(count, height, width, seed):
    """(count, 3, height, width) float64 images of a few smooth blobs (regions for the feedback step)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 3, 4, generator=generator, dtype=torch.float64)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * 2


def heads(block, normed):
    """(T, D) -> per-head q, k, v lists of (T, d) from the packed ``in_proj``."""
    q, k, v = (normed @ block.attn.in_proj_weight.t() + block.attn.in_proj_bias).chunk(3, dim=-1)
    count = block.attn.num_heads
    return [list(t.reshape(t.shape[0], count, -1).transpose(0, 1)) for t in (q, k, v)]


def project(visual, tokens):
    """(M, D) -> (M, E) unit features."""
    return F.normalize(visual.ln_post(tokens) @ visual.proj, dim=-1)


def grid_neighbours(index, grid):
    row, col = divmod(index, grid[1])
    return [(row + dr) * grid[1] + col + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)
            if (dr, dc) != (0, 0) and 0 <= row + dr < grid[0] and 0 <= col + dc < grid[1]]


def reference_outliers(patches, neighbours=30, contamination=0.05):
    """Local outlier factor on squared distances, with the released reachability max(d(p, o), k-dist(p))."""
    distances = ((patches[:, None] - patches[None]) ** 2).sum(-1)
    nearest = distances.argsort(dim=1)[:, 1:neighbours + 1]
    near = distances.gather(1, nearest)
    reach = torch.maximum(near, near.max(dim=1, keepdim=True).values)
    density = neighbours / reach.sum(dim=1)
    factor = torch.stack([(density[nearest[i]] / density[i]).mean() for i in range(len(patches))])
    return factor > float(np.quantile(factor.numpy(), 1 - contamination))


def reference_fill(patches, outliers, grid):
    filled = patches.clone()
    for index in outliers.nonzero().flatten().tolist():
        kept = [n for n in grid_neighbours(index, grid) if not outliers[n]]
        if kept:
            filled[index] = patches[kept].mean(0)
    return filled


def reference_adjust(similarity, tokens):
    weights = similarity * (similarity >= 0.4)
    return weights / (weights.sum(1, keepdim=True) + 1e-6) @ tokens


def reference_sc_clip(visual, tokens, grid, attention=None, pre_adjust_layer=2, post_adjust_layer=1,
                      multi_level_layers=(1, 4), cls_weight=0.3):
    """One window's (T, D) embedded tokens -> (N, E) SC-CLIP features, the number of anomalous patches and the
    (N, N) head mean of the main path's last-block attention; ``attention`` (N, N) replaces the last block's
    attention on both paths (CDAM's "base" second pass)."""
    blocks = visual.transformer.resblocks
    outputs, x = [], tokens[None]
    for block in blocks[:-1]:
        x = block(x)
        outputs.append(x[0])
    x = x[0]
    outliers = reference_outliers(x[1:])
    pre = F.normalize(reference_fill(outputs[pre_adjust_layer][1:], outliers, grid), dim=-1)
    pre_similarity = pre @ pre.t()
    post = F.normalize(outputs[post_adjust_layer][1:], dim=-1)
    post_similarity = post @ post.t()
    block = blocks[-1]

    def attend(patch_tokens):
        """(N, D) -> (N, D) attention output and the (N, N) head mean of its weights."""
        _, keys, values = heads(block, block.ln_1(patch_tokens))
        if attention is not None:
            return block.attn.out_proj(attention @ torch.cat(values, dim=-1)), attention
        centred = 3 * (pre_similarity - pre_similarity.mean())
        centred[centred < 0] = -math.inf
        weights = [(torch.softmax(centred, -1) + torch.softmax(k @ k.t() / math.sqrt(k.shape[-1]), -1)) / 2
                   for k in keys]
        per_head = [w @ v for w, v in zip(weights, values)]
        return block.attn.out_proj(torch.cat(per_head, dim=-1)), sum(weights) / len(weights)

    main, main_attention = attend(reference_adjust(pre_similarity, reference_fill(x[1:], outliers, grid)))
    summed = sum(outputs[multi_level_layers[0]:multi_level_layers[1]])
    multi = attend(summed[1:])[0] + cls_weight * summed[0]
    fused = reference_adjust(post_similarity, main + cls_weight * x[0]) + reference_adjust(post_similarity, multi)
    return project(visual, fused), int(outliers.sum()), main_attention


def gaussian_bias(grid, sigma):
    """(T, T) exp(-|p_i - p_j|^2 / (2 sigma^2)) between patches, zero CLS row and column."""
    bias = torch.zeros(grid[0] * grid[1] + 1, grid[0] * grid[1] + 1, dtype=torch.float64)
    for i in range(grid[0] * grid[1]):
        for j in range(grid[0] * grid[1]):
            (ri, ci), (rj, cj) = divmod(i, grid[1]), divmod(j, grid[1])
            bias[i + 1, j + 1] = math.exp(-((ri - rj) ** 2 + (ci - cj) ** 2) / (2 * sigma ** 2))
    return bias


def reference_feedback(labels, grid, sigma):
    """SFR map of (N,) patch labels -> (T, T) float64 and the number of equal-label pairs whose path leaves the
    label. The path of (i, j) is sampled at the float32 points t = linspace(0, 1, c_max + 1) of the segment
    from i to j, rounded half to even, for the first c_ij + 1 samples (c: Chebyshev distances)."""
    num = len(labels)
    coords = [divmod(i, grid[1]) for i in range(num)]
    chebyshev = [[max(abs(a[0] - b[0]), abs(a[1] - b[1])) for b in coords] for a in coords]
    longest = max(max(row) for row in chebyshev)
    fractions = torch.linspace(0, 1, longest + 1)
    same = np.zeros((num, num))
    decayed = 0
    for i in range(num):
        for j in range(num):
            if labels[i] != labels[j]:
                continue
            start, end = torch.tensor(coords[i], dtype=torch.float32), torch.tensor(coords[j], dtype=torch.float32)
            points = [(start * (1 - fractions[s]) + end * fractions[s]).round().long().tolist()
                      for s in range(chebyshev[i][j] + 1)]
            stays = all(labels[row * grid[1] + col] == labels[i] for row, col in points)
            same[i, j] = 1.0 if stays else math.exp(-chebyshev[i][j] / longest)
            decayed += not stays
    size = min(num, int(6 * sigma + 1))
    size += 1 - size % 2
    kernel = np.exp(-(np.arange(size) - size // 2) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    blurred = np.zeros_like(same)
    for i in range(num):
        for j in range(num):
            blurred[i, j] = sum(kernel[m] * same[i, j + m - size // 2] for m in range(size)
                                if 0 <= j + m - size // 2 < num)
    feedback = torch.zeros(num + 1, num + 1, dtype=torch.float64)
    feedback[1:, 1:] = torch.from_numpy(blurred / (blurred.sum(1, keepdims=True) + 1e-8))
    return feedback / feedback.max(), decayed


def reference_resclip(visual, tokens, grid, image, queries, *, rcs_layers=(1, 3), rcs_weights=(2.0, 0.3),
                      sfr_weights=(2.2, 0.7), threshold=0.0, logit_scale=40.0, sigma=5.0, pamr_steps=2,
                      dilations=(1, 2)):
    """One window: (T, D) embedded tokens, (3, h, w) image, (Q, E) queries -> (N, E) ResCLIP features, the
    patch labels of its first segmentation, the number of decayed pairs and the (T, T) head mean of the last
    block's final attention."""
    blocks, x, rcs = visual.transformer.resblocks, tokens, []
    for index, block in enumerate(blocks[:-1]):
        if rcs_layers[0] <= index < rcs_layers[1]:
            q, k, _ = heads(block, block.ln_1(x))
            rcs.append([torch.softmax(qh @ kh.t() / math.sqrt(qh.shape[-1]), -1) for qh, kh in zip(q, k)])
        x = block(x[None])[0]
    rcs = [sum(maps[h] for maps in rcs) / len(rcs) for h in range(len(rcs[0]))]
    block = blocks[-1]
    _, keys, values = heads(block, block.ln_1(x))
    key_logits = [k @ k.t() / math.sqrt(k.shape[-1]) for k in keys]
    bias = gaussian_bias(grid, sigma)

    def attention(logits):
        """Per-head (T, T) weights of the last block."""
        tau, share = rcs_weights
        return [tau * ((1 - share) * torch.softmax(logit + bias, -1) + share * r) for logit, r in zip(logits, rcs)]

    def features(logits):
        per_head = [w @ v for w, v in zip(attention(logits), values)]
        return project(visual, block.attn.out_proj(torch.cat(per_head, dim=-1)))[1:]

    first = (features(key_logits) @ queries.t()).t().reshape(-1, *grid)
    pixels = F.interpolate(first[None], size=image.shape[-2:], mode="bilinear", align_corners=False)
    probs = torch.softmax(logit_scale * refine_masks(image[None], pixels, pamr_steps, dilations)[0], dim=0)
    pixel_labels = probs.argmax(0)
    pixel_labels[probs.max(0).values < threshold] = 0
    labels = []
    for row in range(grid[0]):
        for col in range(grid[1]):
            counts = Counter(pixel_labels[row * 16:(row + 1) * 16, col * 16:(col + 1) * 16].flatten().tolist())
            labels.append(max(counts.items(), key=lambda item: (item[1], -item[0]))[0])
    feedback, decayed = reference_feedback(labels, grid, sigma)
    tau, share = sfr_weights
    # the released map, and its weighted term, are held in fp16
    weighted = (share * feedback.to(torch.float16)).double()
    refined = [tau * ((1 - share) * logit + weighted) for logit in key_logits]
    final = attention(refined)
    return features(refined), labels, decayed, sum(final) / len(final)


class TestSCCLIP(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.visual = small_tower()
        cls.images = smooth_images(2, 224, 224, seed=1)  # the trained 14 x 14 grid: 196 patches, 30 neighbours
        cls.encoder = DenseCLIPEncoder(cls.visual, "sc_clip", base_options=SC_CLIP_LAYERS)
        with torch.no_grad():
            cls.state = cls.encoder.forward_to_last_block(cls.images)
            cls.tokens = cls.encoder.embed(cls.images)[0]

    def test_first_pass_is_sc_clip(self):
        with torch.no_grad():
            features = self.encoder.first_pass(self.state)
            for window in range(2):
                expected, anomalies, _ = reference_sc_clip(self.visual, self.tokens[window], self.state.grid)
                self.assertGreater(anomalies, 0)
                self.assertLessEqual((features[window] - expected).abs().max().item(), 1e-5)

    def test_base_attention_is_the_main_paths(self):
        with torch.no_grad():
            got = self.encoder.base_attention(self.state)
            expected = [reference_sc_clip(self.visual, self.tokens[window], self.state.grid)[2] for window in range(2)]
        patches = self.state.grid[0] * self.state.grid[1]
        self.assertEqual(tuple(got.shape), (2, patches, patches))
        for window in range(2):
            self.assertLessEqual((got[window] - expected[window]).abs().max().item(), 1e-10)
        torch.testing.assert_close(got.sum(-1), torch.ones(2, patches, dtype=got.dtype))  # two softmaxes, halved

    def test_second_passes(self):
        weights = cdam_attention(torch.randn(2, 7, *self.state.grid, dtype=torch.float64)).double()
        with torch.no_grad():
            structure = self.encoder.second_pass(self.state, weights, "base")
            for window in range(2):
                expected = reference_sc_clip(self.visual, self.tokens[window], self.state.grid, weights[window])[0]
                self.assertLessEqual((structure[window] - expected).abs().max().item(), 1e-5)
            # "released": CDAM's block on the original stream, whatever the first pass was
            maskclip = DenseCLIPEncoder(self.visual, "maskclip")
            released = maskclip.second_pass(maskclip.forward_to_last_block(self.images), weights)
            self.assertLessEqual((self.encoder.second_pass(self.state, weights) - released).abs().max().item(), 1e-10)

    def test_layer_options_are_checked(self):
        with self.assertRaisesRegex(ValueError, "PRE_ADJUST_LAYER 4 is not a block before the last"):
            DenseCLIPEncoder(self.visual, "sc_clip", base_options={**SC_CLIP_LAYERS, "pre_adjust_layer": 4})
        with self.assertRaisesRegex(ValueError, r"MULTI_LEVEL_LAYERS \(2, 2\)"):
            DenseCLIPEncoder(self.visual, "sc_clip", base_options={**SC_CLIP_LAYERS, "multi_level_layers": (2, 2)})


class TestResCLIP(unittest.TestCase):
    OPTIONS = {"rcs_layers": (1, 3), "sfr_threshold": 0.0, "sfr_pamr_steps": 2, "sfr_pamr_dilations": (1, 2)}

    @classmethod
    def setUpClass(cls):
        cls.visual = small_tower(layers=4, seed=3)
        cls.images = smooth_images(2, 96, 136, seed=4)  # 6 x 8 patches, 8 columns of pixels past the last
        cls.queries = F.normalize(torch.randn(6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5)),
                                  dim=-1)
        cls.encoder = DenseCLIPEncoder(cls.visual, "resclip", base_options=cls.OPTIONS)
        with torch.no_grad():
            cls.state = cls.encoder.forward_to_last_block(cls.images)
            cls.features = cls.encoder.first_pass(cls.state, cls.queries)
            cls.tokens = cls.encoder.embed(cls.images)[0]

    def test_first_pass_is_resclip(self):
        with torch.no_grad():
            for window in range(2):
                expected, labels, decayed, _ = reference_resclip(self.visual, self.tokens[window], self.state.grid,
                                                                 self.images[window], self.queries)
                self.assertGreater(len(set(labels)), 1)  # the feedback step sees several regions ...
                self.assertGreater(decayed, 0)  # ... and equal-label pairs separated by another label
                self.assertLessEqual((self.features[window] - expected).abs().max().item(), 1e-5)

    def test_base_attention_is_the_final_mixture(self):
        with torch.no_grad():
            got = self.encoder.base_attention(self.state, self.queries)
            references = [reference_resclip(self.visual, self.tokens[window], self.state.grid, self.images[window],
                                            self.queries)[3] for window in range(2)]
        patches = self.state.grid[0] * self.state.grid[1]
        self.assertEqual(tuple(got.shape), (2, patches, patches))
        for window, expected in enumerate(references):
            self.assertLessEqual((got[window] - expected[1:, 1:]).abs().max().item(), 1e-6)
            # a full row sums to tau_r = 2; without the CLS column it sums to less
            torch.testing.assert_close(expected.sum(-1), torch.full((patches + 1,), 2.0, dtype=torch.float64))
        self.assertTrue((got.sum(-1) < 2).all())
        with self.assertRaisesRegex(ValueError, "needs the dataset's text queries"):
            self.encoder.base_attention(self.state)

    def test_second_passes(self):
        weights = cdam_attention(torch.randn(2, 7, *self.state.grid, dtype=torch.float64)).double()
        naclip = DenseCLIPEncoder(self.visual, "naclip")
        with torch.no_grad():
            naclip_state = naclip.forward_to_last_block(self.images)
            # "base": the reduced block with CDAM's map as its whole attention, as for NACLIP
            self.assertLessEqual((self.encoder.second_pass(self.state, weights, "base")
                                  - naclip.second_pass(naclip_state, weights, "base")).abs().max().item(), 1e-10)
            self.assertLessEqual((self.encoder.second_pass(self.state, weights)
                                  - naclip.second_pass(naclip_state, weights)).abs().max().item(), 1e-10)

    def test_needs_queries_and_valid_options(self):
        with self.assertRaisesRegex(ValueError, "needs the dataset's text queries"):
            self.encoder.first_pass(self.state)
        for options, message in (({"rcs_layers": (1, 4)}, "RCS_LAYERS"), ({"rcs_weights": (2.0,)}, "RCS_WEIGHTS"),
                                 ({"sfr_weights": (1, 2, 3)}, "SFR_WEIGHTS"), ({"sfr_pamr_steps": -1}, "SFR_PAMR_STEPS")):
            with self.assertRaisesRegex(ValueError, f"MODEL.CDAM.RESCLIP.{message}"):
                DenseCLIPEncoder(self.visual, "resclip", base_options={**self.OPTIONS, **options})


def one_template(folder):
    """A template file with one template (fast text encoding) in ``folder``."""
    path = Path(folder, "templates.txt")
    path.write_text("a photo of a {}.\n")
    return str(path)


def tiny_opts(peer, folder):
    """Options that run a peer config on the tiny random tower and the toy images."""
    return ["MODEL.CDAM.CLIP_MODEL", "tiny:ViT-B-16", "MODEL.CDAM.CLIP_WEIGHTS", "random", "MODEL.CDAM.TEMPLATES",
            one_template(folder), "MODEL.CDAM.TEXT_CACHE_DIR", "", "MODEL.CDAM.SLIDE_CROP", "64",
            "MODEL.CDAM.SLIDE_STRIDE", "32", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "256",
            "DATALOADER.NUM_WORKERS", "0", *TINY_LAYERS[peer]]


def flatten(node, prefix=""):
    """Nested YAML mapping -> {"A.B": value}."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def peer_config(peer, name):
    return os.path.join(REPO, "configs", "peers", peer, f"{name}.yaml")


def benchmark_names(dataset):
    """The package's own name file of a benchmark dataset."""
    return {"coco_object": "coco_object81"}.get(dataset, dataset)


@requires_detectron2
class TestPeerConfigs(unittest.TestCase):
    def test_every_protocol_config_loads(self):
        from cdam_d2.cdam.modeling.vocabulary import read_class_names_file
        from cdam_d2.engine import load_cfg

        for peer in PEERS:
            shipped = sorted(os.listdir(os.path.join(REPO, "configs", "peers", peer)))
            base_file = {"sc_clip": "Base-SC-CLIP.yaml", "resclip": "Base-ResCLIP.yaml"}[peer]
            self.assertEqual(shipped, sorted([base_file] + [f"{d}{s}.yaml" for d in DATASETS for s in ("", "_cdam")]))
            shared = yaml.safe_load(Path(REPO, "configs", "peers", peer, base_file).read_text())
            for dataset in DATASETS:  # each dataset file: the folder's Base, and only what differs from it
                own = yaml.safe_load(Path(peer_config(peer, dataset)).read_text())
                self.assertEqual(own["_BASE_"], base_file)
                for section in ("MODEL", "INPUT"):
                    flat_own, flat_shared = flatten(own.get(section, {})), flatten(shared.get(section, {}))
                    repeated = {key for key, value in flat_own.items() if flat_shared.get(key) == value}
                    self.assertFalse(repeated, f"{peer}/{dataset}.yaml repeats {base_file}: {repeated}")
            for dataset in DATASETS:
                with self.subTest(peer=peer, dataset=dataset):
                    alone = load_cfg(peer_config(peer, dataset))[0]
                    with_cdam = load_cfg(peer_config(peer, f"{dataset}_cdam"))[0]
                    benchmark = load_cfg(os.path.join(REPO, "configs", f"cdam_{dataset}.yaml"))[0]
                    self.assertEqual((alone.MODEL.CDAM.BASE, alone.MODEL.CDAM.USE_CDAM), (peer, False))
                    self.assertEqual(alone.DATASETS.TEST, benchmark.DATASETS.TEST)
                    self.assertIn(alone.MODEL.CDAM.BACKGROUND_RULE, ("fixed", "none"))
                    # the peer's names: as many classes as the benchmark's vocabulary
                    self.assertEqual(read_class_names_file(alone.MODEL.CDAM.CLASS_NAMES_FILE).num_classes,
                                     read_class_names_file(f"{benchmark_names(dataset)}.txt").num_classes)
                    # CDAM on top changes nothing else
                    with_cdam.defrost()
                    with_cdam.MODEL.CDAM.USE_CDAM, with_cdam.OUTPUT_DIR = False, alone.OUTPUT_DIR
                    self.assertEqual(with_cdam.dump(), alone.dump())

    def test_unknown_or_invalid_options(self):
        from detectron2.modeling import build_model

        with tempfile.TemporaryDirectory() as folder:
            with self.assertRaisesRegex(ValueError, "MODEL.CDAM.BASE 'scclip' is not one of"):
                build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.BASE", "scclip"))
            with self.assertRaisesRegex(AssertionError, "Non-existent key: MODEL.CDAM.RESCLIP.TEMPERATURE"):
                toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.RESCLIP.TEMPERATURE", "0.5")
            for opts, message in ((("MODEL.CDAM.BASE", "sc_clip"), "SC_CLIP.PRE_ADJUST_LAYER 8"),
                                  (("MODEL.CDAM.BASE", "resclip"), r"RESCLIP.RCS_LAYERS \(5, 9\)"),
                                  (("MODEL.CDAM.BASE", "resclip", *TINY_LAYERS["resclip"],
                                    "MODEL.CDAM.RESCLIP.SFR_WEIGHTS", "(2.2,)"), "RESCLIP.SFR_WEIGHTS")):
                with self.subTest(message), self.assertRaisesRegex(ValueError, message):
                    build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.TEMPLATES", one_template(folder),
                                        "MODEL.CDAM.TEXT_CACHE_DIR", "", *opts))

    def test_alone_and_with_cdam_through_build_model(self):
        from detectron2.modeling import build_model

        from cdam_d2.engine import load_cfg

        image = torch.from_numpy(
            (smooth_images(1, 96, 128, seed=6)[0] * 40 + 128).clamp(0, 255).to(torch.uint8).numpy())
        record = {"image": image, "height": 75, "width": 100, "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}}
        with tempfile.TemporaryDirectory() as folder:
            for peer in PEERS:
                scores = {}
                for name in ("voc21", "voc21_cdam"):
                    model = build_model(load_cfg(peer_config(peer, name), ["MODEL.DEVICE", "cpu",
                                                                           *tiny_opts(peer, folder)])[0]).eval()
                    self.assertEqual(model.segmentor.encoder.base, peer)
                    with torch.no_grad():
                        scores[name] = model([record])[0]["sem_seg"]
                    self.assertEqual(tuple(scores[name].shape), (21, 75, 100))
                    self.assertTrue(torch.isfinite(scores[name]).all())
                self.assertFalse(torch.equal(scores["voc21"], scores["voc21_cdam"]))


@slow
@requires_detectron2
class TestPeerConfigsEvaluate(RegisteredToyDatasets, unittest.TestCase):
    def test_toy_voc_evaluation(self):
        from cdam_d2.engine import argument_parser, main

        with tempfile.TemporaryDirectory() as folder:
            for peer in PEERS:
                for name in ("voc21", "voc21_cdam"):
                    with self.subTest(peer=peer, config=name):
                        args = argument_parser().parse_args([
                            "--config-file", peer_config(peer, name), "--eval-only", "MODEL.DEVICE", "cpu",
                            *tiny_opts(peer, folder), "OUTPUT_DIR", os.path.join(folder, peer, name)])
                        results = main(args)["sem_seg"]
                        self.assertEqual(sum(key.startswith("IoU-") for key in results), 21)
                        self.assertFalse(math.isnan(results["mIoU"]))


if __name__ == "__main__":
    unittest.main()
