"""One reading of every weights string (``cdam_d2.weights.resolve_weights``) and one safe reader of weight
files, through each entry point: CLIP weights, ClusterCAM's pretrained backbone, ``MODEL.WEIGHTS`` (the
checkpointer and the predictor) and the web demo's banner; a ``~`` path works for every key."""
import importlib.util
import os
import tempfile
import unittest
from unittest import mock

import torch
from torch import nn

from cdam_d2.weights import WeightsFileError, read_weights_file, resolve_weights
from tests.helpers import CLUSTERCAM_TOY_CONFIG, CONFIGS, import_tool, requires_detectron2, toy_cfg, truncate_half


class HomeFolder:
    """A temporary folder as ``~`` (``HOME``) for the duration of a test."""

    def setUp(self):
        super().setUp()
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.home = self._tmp.name
        patcher = mock.patch.dict(os.environ, {"HOME": self.home})
        patcher.start()
        self.addCleanup(patcher.stop)

    def in_home(self, name):
        return os.path.join(self.home, name)


class ResolveWeightsTest(HomeFolder, unittest.TestCase):
    def test_each_kind(self):
        torch.save({"w": torch.zeros(1)}, self.in_home("w.pth"))
        for text in ("", "random", "  random "):
            self.assertEqual(resolve_weights(text, "KEY").kind, "random", text)
        source = resolve_weights("~/w.pth", "KEY")
        self.assertEqual((source.kind, source.value), ("file", self.in_home("w.pth")))
        self.assertIn(self.in_home("w.pth"), source.describe())
        for tag in ("openai", "laion2b_s34b_b88k", "deit_small_patch16_224"):
            source = resolve_weights(tag, "KEY")
            self.assertEqual((source.kind, source.value, source.is_url), ("tag", tag, False))
        for url in ("https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
                    "detectron2://ImageNetPretrained/MSRA/R-50.pkl"):
            source = resolve_weights(url, "KEY")
            self.assertEqual((source.kind, source.is_url), ("tag", True))
            self.assertIn("URL", source.describe())

    def test_a_path_that_names_no_file_is_an_error_naming_the_key(self):
        with self.assertRaisesRegex(FileNotFoundError, r"MODEL\.X: weights file '~/missing.pth' \(expanded to "
                                                       f"'{self.in_home('missing.pth')}'\\) does not exist"):
            resolve_weights("~/missing.pth", "MODEL.X")
        for text in ("weights/model.pth", "./model", "model_final.pth", "deit.safetensors"):
            with self.subTest(text), self.assertRaisesRegex(FileNotFoundError, "MODEL.X"):
                resolve_weights(text, "MODEL.X")


class ReadWeightsFileTest(unittest.TestCase):
    def test_every_container_reads_as_data(self):
        module = nn.Linear(3, 2)
        expected = module.state_dict()
        with tempfile.TemporaryDirectory() as folder:
            files = {"torch": os.path.join(folder, "a.pth"), "legacy": os.path.join(folder, "b.pth"),
                     "torchscript": os.path.join(folder, "c.pt")}
            torch.save(expected, files["torch"])
            torch.save(expected, files["legacy"], _use_new_zipfile_serialization=False)
            torch.jit.save(torch.jit.script(module), files["torchscript"])
            if importlib.util.find_spec("safetensors") is not None:
                from safetensors.torch import save_file

                files["safetensors"] = os.path.join(folder, "d.safetensors")
                save_file({k: v.contiguous() for k, v in expected.items()}, files["safetensors"])
            for name, path in files.items():
                for mmap in (False, True):
                    with self.subTest(name, mmap=mmap):
                        content, container = read_weights_file(path, "KEY", mmap=mmap)
                        self.assertEqual(container, {"legacy": "torch"}.get(name, name))
                        self.assertEqual(set(content), set(expected))
                        for key, value in expected.items():
                            self.assertTrue(torch.equal(content[key], value), key)

    def test_damaged_files_name_themselves_and_their_key(self):
        with tempfile.TemporaryDirectory() as folder:
            for name, save in (("a.pth", lambda p: torch.save({"w": torch.zeros(1000)}, p)),
                               ("c.pt", lambda p: torch.jit.save(torch.jit.script(nn.Linear(30, 20)), p))):
                path = os.path.join(folder, name)
                save(path)
                truncate_half(path)
                with self.subTest(name), self.assertRaisesRegex(WeightsFileError, f"'{path}', given by MY.KEY"):
                    read_weights_file(path, "MY.KEY")
            with self.assertRaisesRegex(FileNotFoundError, "given by MY.KEY"):
                read_weights_file(os.path.join(folder, "missing.pth"), "MY.KEY")


class ClipWeightsTest(HomeFolder, unittest.TestCase):
    """MODEL.CDAM.CLIP_WEIGHTS: random, a ``~`` file and an open_clip tag."""

    def test_each_kind(self):
        from cdam_d2.cdam.modeling.clip_loader import resolve_clip_weights

        self.assertIsNone(resolve_clip_weights("ViT-B-16", "random").path)
        torch.save({"w": torch.zeros(1)}, self.in_home("clip.pt"))
        self.assertEqual(resolve_clip_weights("ViT-B-16", "~/clip.pt").path, self.in_home("clip.pt"))
        with mock.patch("open_clip.download_pretrained", return_value=self.in_home("clip.pt")) as download:
            resolved = resolve_clip_weights("ViT-B-16", "openai")
        self.assertEqual(download.call_args.args[0]["url"].split("/")[-1], "ViT-B-16.pt")
        self.assertEqual((resolved.path, resolved.quick_gelu), (self.in_home("clip.pt"), True))
        with self.assertRaisesRegex(FileNotFoundError, "MODEL.CDAM.CLIP_WEIGHTS"):
            resolve_clip_weights("ViT-B-16", "~/other.pt")


class PretrainedBackboneTest(HomeFolder, unittest.TestCase):
    """MODEL.CLUSTERCAM.PRETRAINED: a ``~`` file, a timm name, a URL, random."""

    def test_each_kind(self):
        from cdam_d2.clustercam.modeling import load_deit_state_dict

        state = {"cls_token": torch.randn(1, 1, 8), "pos_embed": torch.randn(1, 5, 8)}
        torch.save({"model": state}, self.in_home("deit.pth"))
        loaded = load_deit_state_dict("~/deit.pth")
        self.assertTrue(torch.equal(loaded["cls_token"], state["cls_token"]))
        fake = nn.Linear(2, 2)
        with mock.patch("timm.create_model", return_value=fake) as create:
            self.assertEqual(set(load_deit_state_dict("deit_small_patch16_224")), set(fake.state_dict()))
        self.assertEqual(create.call_args.args, ("deit_small_patch16_224",))
        url = "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth"
        with mock.patch("torch.hub.load_state_dict_from_url", return_value={"model": state}) as download:
            self.assertEqual(set(load_deit_state_dict(url)), set(state))
        self.assertEqual(download.call_args.args, (url,))
        self.assertTrue(download.call_args.kwargs["weights_only"])
        with mock.patch("timm.create_model", side_effect=OSError("offline")):
            with self.assertRaisesRegex(RuntimeError, "MODEL.CLUSTERCAM.PRETRAINED.*Offline"):
                load_deit_state_dict("deit_small_patch16_224")
        with self.assertRaisesRegex(ValueError, "no DeiT weights"):
            load_deit_state_dict("random")

    @requires_detectron2
    def test_build_model_reads_a_home_path_and_takes_random(self):
        from detectron2.modeling import build_model

        from timm.models.vision_transformer import VisionTransformer

        from cdam_d2.engine import load_cfg

        options = load_cfg(CLUSTERCAM_TOY_CONFIG)[0].MODEL.CLUSTERCAM
        deit = VisionTransformer(patch_size=16, embed_dim=options.EMBED_DIM, depth=options.DEPTH,
                                 num_heads=options.NUM_HEADS).state_dict()
        torch.save(deit, self.in_home("deit.pth"))
        model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.PRETRAINED", "~/deit.pth"))
        self.assertTrue(torch.equal(model.net.patch_embed.proj.weight, deit["patch_embed.proj.weight"]))
        with self.assertLogs("cdam_d2.clustercam.meta_arch", "WARNING") as logs:
            build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.PRETRAINED", "random"))
        self.assertIn("RANDOM weights", logs.output[0])


@requires_detectron2
class ModelWeightsTest(HomeFolder, unittest.TestCase):
    """MODEL.WEIGHTS through the checkpointer and the predictor: a ``~`` file, a URL, random."""

    def test_checkpointer_each_kind(self):
        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        source, target = nn.Sequential(nn.Linear(3, 2)), nn.Sequential(nn.Linear(3, 2))
        torch.save({"model": source.state_dict()}, self.in_home("model.pth"))
        CoveringCheckpointer(target).load("~/model.pth")
        self.assertTrue(torch.equal(target[0].weight, source[0].weight))
        before = {k: v.clone() for k, v in target.state_dict().items()}
        for text in ("", "random"):
            self.assertEqual(CoveringCheckpointer(target).load(text), {})
        self.assertTrue(all(torch.equal(before[k], v) for k, v in target.state_dict().items()))
        url = "https://example.org/checkpoints/model.pth"
        target = nn.Sequential(nn.Linear(3, 2))
        checkpointer = CoveringCheckpointer(target)
        with mock.patch.object(checkpointer.path_manager, "get_local_path",
                               return_value=self.in_home("model.pth")) as download:
            checkpointer.load(url)
        self.assertEqual(download.call_args.args[0], url)
        self.assertTrue(torch.equal(target[0].weight, source[0].weight))
        with self.assertRaisesRegex(FileNotFoundError, "MODEL.WEIGHTS 'model_zoo_name' is neither a file nor a URL"):
            CoveringCheckpointer(target).load("model_zoo_name")
        with self.assertRaisesRegex(FileNotFoundError, "MODEL.WEIGHTS: weights file '~/gone.pth'"):
            CoveringCheckpointer(target).load("~/gone.pth")

    def test_predictor_reads_a_home_path(self):
        from cdam_d2 import build_predictor
        from cdam_d2.clustercam.predictor import ClusterCAMPredictor

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        trained = build_predictor(CLUSTERCAM_TOY_CONFIG, opts=opts).model
        with torch.no_grad():
            for parameter in trained.parameters():
                parameter.add_(0.25)
        torch.save({"model": trained.state_dict()}, self.in_home("model_final.pth"))
        predictor = build_predictor(CLUSTERCAM_TOY_CONFIG, opts=opts + ["MODEL.WEIGHTS", "~/model_final.pth"])
        self.assertIsInstance(predictor, ClusterCAMPredictor)
        for (name, ours), theirs in zip(predictor.model.state_dict().items(), trained.state_dict().values()):
            self.assertTrue(torch.equal(ours, theirs), name)


@requires_detectron2
class WebDemoBannerTest(HomeFolder, unittest.TestCase):
    def test_banner_says_each_kind(self):
        from cdam_d2.engine import load_cfg

        web_demo = import_tool("web_demo")
        cdam = os.path.join(CONFIGS, "cdam_voc21.yaml")
        torch.save({"w": torch.zeros(1)}, self.in_home("ViT-B-16.pt"))
        kind, text = web_demo.describe_weights(load_cfg(cdam, ["MODEL.CDAM.CLIP_WEIGHTS", "~/ViT-B-16.pt"])[0])
        self.assertEqual(kind, "weights")
        self.assertIn(f"local file `{self.in_home('ViT-B-16.pt')}`", text)
        kind, text = web_demo.describe_weights(load_cfg(cdam, [])[0])
        self.assertEqual(kind, "weights")
        self.assertIn("open_clip pretrained weights `openai`", text)
        kind, text = web_demo.describe_weights(load_cfg(cdam, ["MODEL.CDAM.CLIP_WEIGHTS", "random"])[0])
        self.assertEqual(kind, "random")
        with self.assertRaisesRegex(FileNotFoundError, "MODEL.CDAM.CLIP_WEIGHTS"):
            web_demo.describe_weights(load_cfg(cdam, ["MODEL.CDAM.CLIP_WEIGHTS", "~/none.pt"])[0])
        clustercam = os.path.join(CONFIGS, "clustercam_voc.yaml")
        torch.save({"model": {}}, self.in_home("model_final.pth"))
        kind, text = web_demo.describe_weights(load_cfg(clustercam, ["MODEL.WEIGHTS", "~/model_final.pth"])[0])
        self.assertEqual((kind, text), ("weights", f"**ClusterCAM weights:** `{self.in_home('model_final.pth')}`"))
        self.assertEqual(web_demo.describe_weights(load_cfg(clustercam, [])[0])[0], "random")


if __name__ == "__main__":
    unittest.main()
