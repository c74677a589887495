"""CDAM through Detectron2: config, build_model, mapper, odd sizes, training guard, train_net --eval-only."""
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml")


def one_template_file(folder):
    """A template file with one template: keeps text encoding of 100+ names fast."""
    path = os.path.join(folder, "templates.txt")
    with open(path, "w") as f:
        f.write("a photo of a {}.\n")
    return path


def toy_cfg(*opts):
    from cdam_d2.engine import load_cfg

    return load_cfg(TOY_CONFIG, ["MODEL.DEVICE", "cpu", *opts])[0]


@requires_detectron2
class TestCDAMMetaArch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from detectron2.modeling import build_model

        cls.folder = tempfile.TemporaryDirectory()
        cls.model = build_model(toy_cfg("MODEL.CDAM.TEMPLATES", one_template_file(cls.folder.name))).eval()

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_all_configs_load(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        folders = [os.path.join(REPO, "configs"), os.path.join(REPO, "configs", "variants")]
        paths = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))
                 if name.startswith(("cdam_", "Base-CDAM"))]
        self.assertGreaterEqual(len(paths), 4 + 27)
        for path in paths:
            cfg = get_cfg()
            add_cdam_config(cfg)
            cfg.merge_from_file(path)
            self.assertEqual(cfg.MODEL.META_ARCHITECTURE, "CDAM", path)
            self.assertEqual(cfg.INPUT.FORMAT, "RGB", path)

    def test_output_shapes_for_odd_sizes(self):
        records = [
            {"image": torch.randint(0, 256, (3, 67, 93), dtype=torch.uint8), "height": 50, "width": 71,
             "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}},
            {"image": torch.randint(0, 256, (3, 96, 129), dtype=torch.uint8), "height": 97, "width": 131,
             "meta": {"dataset_name": "cdam_context60_sem_seg_val"}},
            {"image": torch.randint(0, 256, (3, 70, 64), dtype=torch.uint8), "height": 33, "width": 31},
        ]
        with torch.no_grad():
            outputs = self.model(records)
        self.assertEqual([tuple(o["sem_seg"].shape) for o in outputs], [(21, 50, 71), (60, 97, 131), (21, 33, 31)])
        self.assertTrue(all(torch.isfinite(o["sem_seg"]).all() for o in outputs))
        self.assertEqual(self.model.device, torch.device("cpu"))

    def test_training_mode_raises(self):
        self.model.train()
        try:
            with self.assertRaisesRegex(RuntimeError, "training-free"):
                self.model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 64, "width": 64}])
        finally:
            self.model.eval()

    def test_registered_and_configurable(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        from cdam_d2.modeling.cdam import CDAMSegmentor, DenseCLIPEncoder, TextEmbedder, build_clip
        from cdam_d2.modeling.meta_arch.cdam import CDAM

        self.assertIs(META_ARCH_REGISTRY.get("CDAM"), CDAM)
        clip_model, tokenizer, identity = build_clip("tiny:ViT-B-16", "random")
        model = CDAM(segmentor=CDAMSegmentor(DenseCLIPEncoder(clip_model.visual), crop=64, stride=32),
                     clip_model=clip_model, text_embedder=TextEmbedder(clip_model, tokenizer, identity, ["{}"]),
                     pixel_mean=[0.0, 0.0, 0.0], pixel_std=[255.0, 255.0, 255.0],
                     class_names_file="voc21.txt").eval()
        with torch.no_grad():
            output = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 20, "width": 30,
                             "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}}])
        self.assertEqual(output[0]["sem_seg"].shape, (21, 20, 30))
        self.assertNotIn("pixel_mean", model.state_dict())  # non-persistent buffer


@requires_detectron2
class TestCDAMTestMapper(unittest.TestCase):
    def test_resize_rule(self):
        from PIL import Image

        from cdam_d2.data.mappers.cdam_test_mapper import CDAMTestMapper

        mapper = CDAMTestMapper(toy_cfg("INPUT.MIN_SIZE_TEST", "448", "INPUT.MAX_SIZE_TEST", "2048"))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "a.png")
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path)
            record = mapper({"file_name": path, "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}})
        self.assertEqual(tuple(record["image"].shape), (3, 448, 597))
        self.assertEqual(record["image"].dtype, torch.uint8)
        self.assertEqual((record["height"], record["width"]), (375, 500))


@requires_detectron2
class TestCDAMDemo(unittest.TestCase):
    def test_demo_writes_overlays_for_any_vocabulary(self):
        from PIL import Image

        sys.path.insert(0, os.path.join(REPO, "tools"))
        try:
            import demo
        finally:
            sys.path.pop(0)
        with tempfile.TemporaryDirectory() as folder:
            inputs = os.path.join(folder, "in")
            os.makedirs(inputs)
            for index, size in enumerate([(90, 120), (70, 64)]):
                pixels = np.random.default_rng(index).integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(inputs, f"img{index}.jpg"))
            for vocabulary, output in [("background; cat; sofa, couch", "custom"), ("", "dataset")]:
                demo.main(["--config-file", TOY_CONFIG, "--input", inputs, os.path.join(inputs, "img0.jpg"),
                           "--output", os.path.join(folder, output), "--vocabulary", vocabulary,
                           "MODEL.CDAM.TEMPLATES", one_template_file(folder)])
                written = sorted(os.listdir(os.path.join(folder, output)))
                self.assertEqual(written, ["img0.png", "img1.png"])
                self.assertEqual(Image.open(os.path.join(folder, output, "img0.png")).size[1], 90)


@requires_detectron2
class TestCDAMTrainNet(unittest.TestCase):
    def test_toy_eval_only(self):
        from cdam_d2.data.toy import make_toy_datasets

        with tempfile.TemporaryDirectory() as folder:
            root, output = os.path.join(folder, "datasets"), os.path.join(folder, "out")
            make_toy_datasets(root)
            env = dict(os.environ, DETECTRON2_DATASETS=root)
            command = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", TOY_CONFIG,
                       "--eval-only", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", output]
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
            self.assertEqual(done.returncode, 0, done.stderr[-4000:])
            results = torch.load(os.path.join(output, "inference", "cdam_voc21_sem_seg_val",
                                              "sem_seg_evaluation.pth"), weights_only=True)
        self.assertIn("mIoU", results)


if __name__ == "__main__":
    unittest.main()
