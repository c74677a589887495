"""Text side and CLIP loading: name files, vocabularies, templates, the text-embedding cache, weights."""
import os
import tempfile
import unittest
from unittest import mock

import open_clip
import torch
import torch.nn.functional as F

from cdam_d2.modeling.cdam import TextEmbedder, build_clip, load_templates, resolve_clip_weights
from cdam_d2.modeling.cdam.clip_loader import load_clip_state_dict
from cdam_d2.modeling.cdam.vocabulary import atp_words, parse_vocabulary_string, read_class_names_file


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
            calls = mock.Mock(side_effect=self.model.encode_text)
            with mock.patch.object(self.model, "encode_text", calls):
                first = TextEmbedder(self.model, self.tokenizer, self.identity, load_templates(), folder)(names)
                self.assertGreater(calls.call_count, 0)
                calls.reset_mock()
                second = TextEmbedder(self.model, self.tokenizer, self.identity, load_templates(), folder)(names)
                self.assertEqual(calls.call_count, 0)
                self.assertTrue(torch.equal(first, second))
                TextEmbedder(self.model, self.tokenizer, self.identity + "|other", load_templates(), folder)(names)
                self.assertGreater(calls.call_count, 0)  # other weights: other cache entry


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
            state_dict = load_clip_state_dict(path)
            self.assertTrue(torch.equal(state_dict["visual.proj"], source.visual.proj))
            resolved = resolve_clip_weights("ViT-B-16", path)
            self.assertEqual(resolved.path, path)
            self.assertFalse(resolved.quick_gelu)
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
        with mock.patch("open_clip.download_pretrained", return_value="/cache/ViT-B-16.pt"):
            resolved = resolve_clip_weights("ViT-B-16", "openai")
        self.assertTrue(resolved.quick_gelu)
        self.assertEqual(resolved.path, "/cache/ViT-B-16.pt")


if __name__ == "__main__":
    unittest.main()
