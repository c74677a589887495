"""Text side and CLIP loading: name files, vocabularies, templates, the text-embedding cache, weights."""
import contextlib
import copy
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

import open_clip
import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import TextEmbedder, build_clip, load_templates, resolve_clip_weights
from cdam_d2.cdam.modeling.clip_loader import read_checkpoint
from cdam_d2.cdam.modeling.text_bank import CausalTextTower
from cdam_d2.cdam.modeling.vocabulary import atp_words, parse_vocabulary_string, read_class_names_file
from tests.helpers import slow, subprocess_env


class TestVocabularies(unittest.TestCase):
    def test_released_name_files(self):
        atp = atp_words()
        self.assertEqual(len(atp), 80)
        self.assertEqual((atp[0], atp[28], atp[29], atp[-1]), ("black", "dark yellow", "plain", "person"))
        for name, num_classes, first, last in [("voc21.txt", 21, "background", "tv monitor"),
                                               ("context60.txt", 60, "background", "wood"),
                                               ("coco_object81.txt", 81, "sky", "toothbrush")]:
            vocabulary = read_class_names_file(name)
            self.assertEqual(vocabulary.num_classes, num_classes)
            self.assertEqual(len(vocabulary.queries) + len(atp), num_classes + 80)  # Q = 101 / 140 / 161
            self.assertEqual((vocabulary.queries[0], vocabulary.queries[-1]), (first, last))
        self.assertEqual(read_class_names_file("voc21.txt").queries[4], "ship")

    def test_synonyms_and_command_line_vocabulary(self):
        vocabulary = parse_vocabulary_string("cat; dog ; sofa, couch;")
        self.assertEqual(vocabulary.queries, ("cat", "dog", "sofa", "couch"))
        self.assertEqual(vocabulary.query_to_class, (0, 1, 2, 2))
        self.assertEqual(vocabulary.num_classes, 3)
        with self.assertRaisesRegex(ValueError, "empty name"):
            parse_vocabulary_string("cat, ; dog")
        with self.assertRaisesRegex(FileNotFoundError, "no_such_names.txt"):
            read_class_names_file("no_such_names.txt")

    def test_user_paths_expand_home(self):
        with tempfile.TemporaryDirectory() as home, mock.patch.dict(os.environ, {"HOME": home}):
            with open(os.path.join(home, "names.txt"), "w") as f:
                f.write("cat\ndog, puppy\n")
            with open(os.path.join(home, "templates.txt"), "w") as f:
                f.write("a photo of a {}.\n")
            self.assertEqual(read_class_names_file("~/names.txt").queries, ("cat", "dog", "puppy"))
            self.assertEqual(load_templates("~/templates.txt"), ["a photo of a {}."])
            embedder = TextEmbedder(None, None, "", ["{}"], cache_dir="~/cache")
            self.assertEqual(embedder.cache_dir, os.path.join(home, "cache"))


class TestTextEmbedder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model, cls.tokenizer, cls.identity = build_clip("tiny:ViT-B-16", "random")

    def test_templates(self):
        templates = load_templates()
        self.assertEqual(templates, [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES])
        self.assertEqual(len(templates), 80)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "templates.txt")
            with open(path, "w") as f:
                f.write("a photo of a {}.\nno placeholder\n")
            with self.assertRaisesRegex(ValueError, "placeholder"):
                load_templates(path)

    def test_embedding_is_renormalized_template_mean(self):
        templates = ["a photo of a {}.", "a drawing of the {}.", "{}"]
        embedder = TextEmbedder(self.model, self.tokenizer, self.identity, templates, cache_dir=None)
        with torch.no_grad():
            embeddings = embedder(["cat", "traffic light"])
            per_prompt = F.normalize(self.model.encode_text(self.tokenizer(
                [t.replace("{}", "traffic light") for t in templates])), dim=-1)
        self.assertEqual(embeddings.shape, (2, 32))
        self.assertLessEqual((embeddings.norm(dim=-1) - 1).abs().max().item(), 1e-5)
        self.assertLessEqual((embeddings[1] - F.normalize(per_prompt.mean(0), dim=0)).abs().max().item(), 1e-5)

    def test_disk_cache_skips_text_encoding(self):
        names = list(read_class_names_file("voc21.txt").queries)
        with tempfile.TemporaryDirectory() as folder:
            calls = mock.Mock(side_effect=TextEmbedder._encode)
            with mock.patch.object(TextEmbedder, "_encode", lambda *args: calls(*args)):
                first = TextEmbedder(self.model, self.tokenizer, self.identity, load_templates(), folder)(names)
                self.assertEqual(calls.call_count, 1)
                second = TextEmbedder(self.model, self.tokenizer, self.identity, load_templates(), folder)(names)
                self.assertEqual(calls.call_count, 1)
                self.assertTrue(torch.equal(first, second))
                TextEmbedder(self.model, self.tokenizer, self.identity + "|other", load_templates(), folder)(names)
                self.assertEqual(calls.call_count, 2)  # other weights: other cache entry
                embedder = TextEmbedder(self.model, self.tokenizer, self.identity, load_templates(), folder)
                in_bf16 = embedder(names, torch.bfloat16)
                self.assertEqual(calls.call_count, 3)  # other precision: other cache entry
                self.assertFalse(torch.equal(in_bf16, first))
                self.assertTrue(torch.equal(embedder(names, torch.bfloat16), in_bf16))
                self.assertEqual(calls.call_count, 3)
                self.assertEqual(len(os.listdir(folder)), 3)

    def test_cache_holds_names_whatever_the_order(self):
        voc = list(read_class_names_file("voc21.txt").queries)
        context = list(read_class_names_file("context60.txt").queries)
        templates = ["a photo of a {}.", "{}"]
        with tempfile.TemporaryDirectory() as folder, torch.no_grad():
            encoded = []
            encode = TextEmbedder._encode

            def record(embedder, names, *args):
                encoded.append(list(names))
                return encode(embedder, names, *args)

            with mock.patch.object(TextEmbedder, "_encode", record):
                first_voc = TextEmbedder(self.model, self.tokenizer, self.identity, templates, folder)(voc)
                first_context = TextEmbedder(self.model, self.tokenizer, self.identity, templates, folder)(context)
                # a later process, both vocabularies in another order: nothing to encode
                later = TextEmbedder(self.model, self.tokenizer, self.identity, templates, folder)
                both = later(context[::-1] + voc[::-1])
            self.assertEqual(encoded, [voc, [name for name in context if name not in voc]])
            self.assertTrue(torch.equal(both, torch.cat([first_context.flip(0), first_voc.flip(0)])))
            self.assertEqual(len(os.listdir(folder)), 1)
            stored = torch.load(os.path.join(folder, os.listdir(folder)[0]), weights_only=True)
            self.assertEqual(sorted(stored["names"]), sorted(set(voc + context)))

    def test_truncated_encoding_equals_encode_text(self):
        """All 80 templates x the VOC, Context and COCO-Object names (the real text transformer, sliced)."""
        names = sorted({name for file in ("voc21.txt", "context60.txt", "coco_object81.txt")
                        for name in read_class_names_file(file).queries})
        templates = load_templates()
        tower = CausalTextTower.of(self.model)
        self.assertEqual(tower.pool_type, "argmax")
        tokens = self.tokenizer([t.replace("{}", name) for name in names for t in templates])
        with torch.no_grad():
            full = torch.cat([self.model.encode_text(tokens[i:i + 2048], normalize=True)
                              for i in range(0, len(tokens), 2048)])
            embedder = TextEmbedder(self.model, self.tokenizer, self.identity, templates, batch_size=2048,
                                    progress=False)
            with mock.patch.object(self.model, "encode_text", side_effect=AssertionError("full context used")):
                embeddings = embedder(names)
            positions = tower.pooled_positions(tokens)
            self.assertLess(int(positions.max()) + 1, 30)  # the truncation is real (context 77)
            some = torch.arange(0, len(tokens), 97)
            per_prompt = F.normalize(tower.encode(tokens[some], positions[some]), dim=-1)
        self.assertLessEqual((per_prompt - full[some]).abs().max().item(), 1e-6)
        expected = F.normalize(full.reshape(len(names), len(templates), -1).mean(1), dim=-1)
        self.assertLessEqual((embeddings - expected).abs().max().item(), 1e-6)

    def test_full_context_without_causal_mask(self):
        names, templates = ["cat", "traffic light"], ["a photo of a {}.", "{}"]
        bidirectional = copy.deepcopy(self.model)
        bidirectional.attn_mask = None  # every token sees the padding: truncating would change the result
        self.assertIsNone(CausalTextTower.of(bidirectional))
        last_pooled = copy.deepcopy(self.model)
        last_pooled.text_pool_type = "last"
        self.assertIsNone(CausalTextTower.of(last_pooled))
        tokens = self.tokenizer([t.replace("{}", n) for n in names for t in templates])
        with torch.no_grad():
            embeddings = TextEmbedder(bidirectional, self.tokenizer, self.identity, templates, progress=False)(names)
            full = bidirectional.encode_text(tokens, normalize=True)
            truncated = CausalTextTower(bidirectional, "argmax").encode(tokens, tokens.argmax(-1))
        expected = F.normalize(full.reshape(2, 2, -1).mean(1), dim=-1)
        self.assertLessEqual((embeddings - expected).abs().max().item(), 1e-6)
        self.assertGreater((F.normalize(truncated, dim=-1) - full).abs().max().item(), 1e-3)

    def test_progress_bar(self):
        stream = io.StringIO()
        with contextlib.redirect_stderr(stream), torch.no_grad():
            TextEmbedder(self.model, self.tokenizer, self.identity, ["a {}.", "{}"], batch_size=3)(["a", "b", "c"])
        self.assertIn("CDAM text embeddings", stream.getvalue())
        self.assertIn("6/6", stream.getvalue())

    def test_damaged_cache_file_is_recomputed_with_a_warning(self):
        names, templates = ["cat", "dog"], ["a photo of a {}."]
        with tempfile.TemporaryDirectory() as folder, torch.no_grad():
            embedder = TextEmbedder(self.model, self.tokenizer, self.identity, templates, folder, progress=False)
            expected = embedder(names)
            (path,) = [os.path.join(folder, name) for name in os.listdir(folder)]
            for damage in ("truncate", "garbage", "wrong shape"):
                if damage == "truncate":
                    with open(path, "r+b") as f:
                        f.truncate(os.path.getsize(path) // 2)
                elif damage == "garbage":
                    with open(path, "wb") as f:
                        f.write(b"not a checkpoint")
                else:
                    torch.save({"names": names, "templates": templates, "embeddings": torch.zeros(3, 32)}, path)
                with self.assertLogs("cdam_d2.cdam.modeling.text_bank", "WARNING") as logs:
                    again = embedder(names)
                self.assertIn(path, "\n".join(logs.output), damage)
                self.assertTrue(torch.equal(again, expected), damage)
                self.assertTrue(torch.equal(torch.load(path, weights_only=True)["embeddings"], expected), damage)
            self.assertEqual(os.listdir(folder), [os.path.basename(path)])  # no temporary left behind

    @slow
    def test_concurrent_fills_of_an_empty_cache_all_succeed(self):
        names, templates = ["cat", "dog", "sofa"], ["a photo of a {}.", "{}"]
        with tempfile.TemporaryDirectory() as folder:
            cache = os.path.join(folder, "cache")
            script = CONCURRENT_FILL.format(folder=folder, cache=cache, names=names, templates=templates)
            child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=subprocess_env())
            open(os.path.join(folder, "ready.parent"), "w").close()
            while not os.path.exists(os.path.join(folder, "ready.child")) and child.poll() is None:
                time.sleep(0.01)
            with torch.no_grad():  # this process and the child fill the empty cache at the same moment
                mine = TextEmbedder(self.model, self.tokenizer, self.identity, templates, cache, progress=False)(names)
            out, err = child.communicate(timeout=300)
            self.assertEqual(child.returncode, 0, err[-2000:])
            self.assertEqual(out.strip(), str(mine.sum(dim=1).tolist()))
            self.assertEqual(len(os.listdir(cache)), 1)  # one complete file, no temporary left
            # and threads of one process
            with torch.no_grad():
                embedders = [TextEmbedder(self.model, self.tokenizer, self.identity, templates,
                                          os.path.join(folder, "threads"), progress=False) for _ in range(4)]
                results = [None] * 4

                def fill(index):
                    results[index] = embedders[index](names)

                threads = [threading.Thread(target=fill, args=(index,)) for index in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            self.assertTrue(all(torch.equal(result, mine) for result in results))
            self.assertEqual(len(os.listdir(os.path.join(folder, "threads"))), 1)


# A second process encoding into the same empty cache as the test, started together (file barrier);
# it imports cdam_d2 from this checkout through the PYTHONPATH of subprocess_env.
CONCURRENT_FILL = """
import os, time
import torch
from cdam_d2.cdam.modeling import TextEmbedder, build_clip
model, tokenizer, identity = build_clip("tiny:ViT-B-16", "random")
open(os.path.join({folder!r}, "ready.child"), "w").close()
while not os.path.exists(os.path.join({folder!r}, "ready.parent")):
    time.sleep(0.01)
with torch.no_grad():
    embeddings = TextEmbedder(model, tokenizer, identity, {templates!r}, {cache!r}, progress=False)({names!r})
print(embeddings.sum(dim=1).tolist())
"""


class TestClipWeights(unittest.TestCase):
    def test_random_weights_are_reproducible(self):
        first, _, identity = build_clip("tiny:ViT-B-16", "random", seed=4)
        second, _, _ = build_clip("tiny:ViT-B-16", "", seed=4)
        self.assertIn("random", identity)
        self.assertTrue(torch.equal(first.visual.proj, second.visual.proj))

    def test_local_state_dict_file(self):
        source = build_clip("tiny:ViT-B-16", "random", seed=5)[0]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "weights.pt")
            torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
            state_dict = read_checkpoint(path).state_dict
            self.assertTrue(torch.equal(state_dict["visual.proj"], source.visual.proj))
            resolved = resolve_clip_weights("ViT-B-16", path)
            self.assertEqual(resolved.path, path)
            self.assertIsNone(resolved.quick_gelu)  # read from the file by build_clip
            with self.assertRaisesRegex(ValueError, "does not fit"):
                build_clip("ViT-B-16", path)  # tiny weights into the full-size model

    def test_clear_errors(self):
        with self.assertRaisesRegex(FileNotFoundError, "CLIP_WEIGHTS"):
            resolve_clip_weights("ViT-B-16", "/nonexistent/ViT-B-16.pt")
        with self.assertRaisesRegex(ValueError, "pretrained tag"):
            resolve_clip_weights("ViT-B-16", "no_such_tag")
        with self.assertRaisesRegex(ValueError, "random"):
            resolve_clip_weights("tiny:ViT-B-16", "openai")
        with self.assertRaisesRegex(ValueError, "not an open_clip model"):
            build_clip("ViT-Q-99", "random")
        with mock.patch("open_clip.download_pretrained", side_effect=OSError("offline")):
            with self.assertRaisesRegex(RuntimeError, r"'openai'.*MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt"):
                resolve_clip_weights("ViT-B-16", "openai")

    def test_openai_tag_uses_quick_gelu(self):
        with tempfile.TemporaryDirectory() as folder:
            downloaded = os.path.join(folder, "ViT-B-16.pt")
            torch.save({"w": torch.zeros(3)}, downloaded)
            with mock.patch("open_clip.download_pretrained", return_value=downloaded):
                resolved = resolve_clip_weights("ViT-B-16", "openai")
                laion = resolve_clip_weights("ViT-B-16", "laion400m_e32")
        self.assertTrue(resolved.quick_gelu)
        self.assertFalse(laion.quick_gelu)
        self.assertEqual(resolved.path, downloaded)
        self.assertIn("sha256:", resolved.identity)


if __name__ == "__main__":
    unittest.main()
