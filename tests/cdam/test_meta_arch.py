"""CDAM through Detectron2: config files, build_model, odd sizes, dataset vocabularies, CPU precision,
training guard."""
import os
import tempfile
import unittest
import unittest.mock

import torch

from tests.helpers import CDAM_TOY_CONFIG, CONFIGS, one_template_file, requires_detectron2, toy_cfg

BASES = ("maskclip", "sclip", "clearclip", "gem", "naclip")
# dataset -> (test dataset, background class, short side, crop, stride)
BENCHMARKS = {
    "voc21": ("cdam_voc21_sem_seg_val", True, 448, 448, 224),
    "context60": ("cdam_context60_sem_seg_val", True, 448, 448, 224),
    "coco_object": ("cdam_coco_object_sem_seg_val", True, 448, 448, 224),
    "voc20": ("cdam_voc20_sem_seg_val", False, 448, 448, 224),
    "context59": ("cdam_context59_sem_seg_val", False, 448, 448, 224),
    "coco_stuff171": ("cdam_coco_stuff171_sem_seg_val", False, 448, 448, 224),
    "cityscapes19": ("cityscapes_fine_sem_seg_val", False, 560, 224, 112),
    "ade20k150": ("ade20k_sem_seg_val", False, 336, 224, 112),
}


@requires_detectron2
class TestCDAMMetaArch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from detectron2.modeling import build_model

        cls.folder = tempfile.TemporaryDirectory()
        templates = one_template_file(cls.folder.name)
        cls.model = build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.TEMPLATES", templates)).eval()

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_all_configs_load(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        folders = [CONFIGS, os.path.join(CONFIGS, "variants")]
        paths = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))
                 if name.startswith(("cdam_", "Base-CDAM"))]
        self.assertEqual(len(paths), 1 + len(BENCHMARKS) * (1 + 2 * len(BASES)))
        for path in paths:
            cfg = get_cfg()
            add_cdam_config(cfg)
            cfg.merge_from_file(path)
            self.assertEqual(cfg.MODEL.META_ARCHITECTURE, "CDAM", path)
            self.assertEqual(cfg.INPUT.FORMAT, "RGB", path)

    def test_benchmark_configs_and_variant_grid(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        def load(path):
            cfg = get_cfg()
            add_cdam_config(cfg)
            cfg.merge_from_file(os.path.join(CONFIGS, path))
            return cfg

        for dataset, (test_name, with_background, short_side, crop, stride) in BENCHMARKS.items():
            cfg = load(f"cdam_{dataset}.yaml")
            self.assertEqual(tuple(cfg.DATASETS.TEST), (test_name,), dataset)
            self.assertEqual(cfg.MODEL.CDAM.ALPHA, 2.5 if with_background else 0.0, dataset)
            self.assertEqual((cfg.INPUT.MIN_SIZE_TEST, cfg.MODEL.CDAM.SLIDE_CROP, cfg.MODEL.CDAM.SLIDE_STRIDE),
                             (short_side, crop, stride), dataset)
            for base in BASES:
                for suffix, use_cdam in (("", True), ("_baseline", False)):
                    variant = load(os.path.join("variants", f"cdam_{dataset}_{base}{suffix}.yaml"))
                    self.assertEqual((variant.MODEL.CDAM.BASE, variant.MODEL.CDAM.USE_CDAM), (base, use_cdam))
                    self.assertEqual(tuple(variant.DATASETS.TEST), (test_name,))
                    self.assertEqual(variant.MODEL.CDAM.ALPHA, cfg.MODEL.CDAM.ALPHA)
            with open(os.path.join(CONFIGS, "variants", f"cdam_{dataset}_naclip.yaml")) as f:
                self.assertIn("no published number", f.read())  # NACLIP + CDAM is this package's addition

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

    def test_vocabulary_comes_from_dataset_metadata(self):
        from detectron2.data import MetadataCatalog

        from cdam_d2.data.datasets import class_names

        names_file = os.path.join(self.folder.name, "three.txt")
        with open(names_file, "w") as f:
            f.write("sky\nroad, route\ntree\n")
        MetadataCatalog.get("cdam_test_stuff_only").set(stuff_classes=["sky", "road, route", "tree"])
        MetadataCatalog.get("cdam_test_with_file").set(stuff_classes=["a", "b"], class_names_file=names_file)
        MetadataCatalog.get("cdam_test_builtin").set(stuff_classes=["x", "y", "z"])
        vocabulary = self.model.dataset_vocabulary("cdam_test_stuff_only")  # no name file: stuff_classes
        self.assertEqual((vocabulary.queries, vocabulary.query_to_class), (("sky", "road", "route", "tree"), (0, 1, 1, 2)))
        with self.assertRaisesRegex(ValueError, "lists 3 classes but dataset 'cdam_test_with_file' has 2"):
            self.model.dataset_vocabulary("cdam_test_with_file")
        with unittest.mock.patch.dict(class_names.BUILTIN_CLASS_NAMES_FILES, {"cdam_test_builtin": names_file}):
            self.assertEqual(self.model.dataset_vocabulary("cdam_test_builtin").num_classes, 3)
        with self.assertRaisesRegex(ValueError, "neither a class-name file nor `stuff_classes`"):
            self.model.dataset_vocabulary("cdam_test_unregistered")
        record = {"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 20, "width": 24,
                  "meta": {"dataset_name": "cdam_test_stuff_only"}}
        with torch.no_grad():
            self.assertEqual(tuple(self.model([record])[0]["sem_seg"].shape), (3, 20, 24))

    def test_record_without_meta_needs_a_single_test_dataset(self):
        self.assertEqual(self.model.default_dataset, "cdam_voc21_sem_seg_val")  # DATASETS.TEST names one
        default = self.model.default_dataset
        try:
            self.model.default_dataset = ""  # from_config's value when DATASETS.TEST names several
            with self.assertRaisesRegex(ValueError, "'x.jpg' has no meta.*exactly one dataset"):
                self.model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "file_name": "x.jpg"}])
        finally:
            self.model.default_dataset = default

    def test_cpu_precision(self):
        from detectron2.modeling import build_model

        with self.assertRaisesRegex(ValueError, "MODEL.CDAM.CPU_PRECISION 'fp16' is not one of"):
            build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.CPU_PRECISION", "fp16"))
        with unittest.mock.patch.object(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False), \
                self.assertLogs("cdam_d2.cdam.meta_arch", "WARNING") as logs:
            build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.CPU_PRECISION", "bf16", "MODEL.CDAM.TEXT_CACHE_DIR", ""))
        self.assertIn("no native bf16 matrix products", "\n".join(logs.output))
        model = build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.CPU_PRECISION", "bf16", "MODEL.CDAM.TEMPLATES",
                                    one_template_file(self.folder.name), "MODEL.CDAM.TEXT_CACHE_DIR", "")).eval()
        segmentor = model.segmentor
        seen = {}

        def record_dtype(module, args, output):
            seen.setdefault("backbone", output.dtype)

        segmentor.encoder.blocks[0].mlp.c_fc.register_forward_hook(record_dtype)
        attention_map = segmentor.attention_map

        def record_map(logits):
            return seen.setdefault("map", attention_map(logits))

        with unittest.mock.patch.object(segmentor, "attention_map", record_map), torch.no_grad():
            output = model([{"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8), "height": 40,
                             "width": 60, "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}}])
        self.assertEqual(seen["backbone"], torch.bfloat16)
        self.assertEqual(seen["map"].dtype, torch.float32)
        self.assertEqual(output[0]["sem_seg"].dtype, torch.float32)
        self.assertEqual(model.text_autocast_dtypes, {"cuda": torch.float16})  # text stays fp32 under bf16

    def test_training_mode_raises(self):
        self.model.train()
        try:
            with self.assertRaisesRegex(RuntimeError, "training-free"):
                self.model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 64, "width": 64}])
        finally:
            self.model.eval()

    def test_registered_and_configurable(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextEmbedder, build_clip
        from cdam_d2.cdam.meta_arch import CDAM

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
class TestOptionValidation(unittest.TestCase):
    """Bad MODEL.CDAM values stop build_model before CLIP is built (nothing downloaded or read), with an error
    that names the key, the value and what is allowed."""

    def build_without_clip(self, *opts):
        from detectron2.modeling import build_model

        with unittest.mock.patch("cdam_d2.cdam.meta_arch.build_clip", side_effect=AssertionError("CLIP was built")):
            build_model(toy_cfg(CDAM_TOY_CONFIG, *opts))

    def test_bad_values_are_refused_before_clip_is_built(self):
        cases = (
            (("MODEL.CDAM.BASE", "scclip"), r"MODEL.CDAM.BASE 'scclip' is not one of \('clip', 'maskclip'"),
            (("MODEL.CDAM.LAST_BLOCK", "half"),
             r"MODEL.CDAM.LAST_BLOCK 'half' is not one of \('auto', 'full', 'reduced'\)"),
            (("MODEL.CDAM.POS_EMBED_RESAMPLING", "bilinear"),
             r"MODEL.CDAM.POS_EMBED_RESAMPLING 'bilinear' is not one of \('auto', 'scale_factor', 'size_antialias'\)"),
            (("MODEL.CDAM.BACKGROUND_RULE", "otsu"),
             r"MODEL.CDAM.BACKGROUND_RULE 'otsu' is not one of \('entropy', 'fixed', 'none'\)"),
            (("MODEL.CDAM.THRESHOLD_SOURCE", "first_window"),
             r"MODEL.CDAM.THRESHOLD_SOURCE 'first_window' is not one of \('last_window', 'image'\)"),
            (("MODEL.CDAM.SECOND_PASS", "twice"),
             r"MODEL.CDAM.SECOND_PASS 'twice' is not one of \('released', 'base'\)"),
            (("MODEL.CDAM.AREA_THRESHOLD", "-0.1"), "MODEL.CDAM.AREA_THRESHOLD -0.1 must be >= 0"),
            (("MODEL.CDAM.BACKGROUND_RULE", "fixed", "MODEL.CDAM.BACKGROUND_THRESHOLD", "1.5"),
             r"MODEL.CDAM.BACKGROUND_THRESHOLD 1.5 must be in \[0, 1\]"),
            (("MODEL.CDAM.BACKGROUND_THRESHOLD", "-0.2"), r"MODEL.CDAM.BACKGROUND_THRESHOLD -0.2 must be in \[0, 1\]"),
            (("MODEL.CDAM.SLIDE_STRIDE", "65"),
             r"MODEL.CDAM.SLIDE_STRIDE 65 must be between 1 and MODEL.CDAM.SLIDE_CROP \(64\)"),
            (("MODEL.CDAM.SLIDE_CROP", "-1"), "MODEL.CDAM.SLIDE_CROP -1 must be >= 0"),
            (("MODEL.CDAM.BASE", "sc_clip", "MODEL.CDAM.LAST_BLOCK", "full"),
             "MODEL.CDAM.LAST_BLOCK 'full': base 'sc_clip' defines its own last block"),
            (("MODEL.CDAM.BASE", "sc_clip", "MODEL.CDAM.SC_CLIP.POST_ADJUST_LAYER", "-1"),
             "MODEL.CDAM.SC_CLIP.POST_ADJUST_LAYER -1 is not a block before the last one"),
            (("MODEL.CDAM.BASE", "sc_clip", "MODEL.CDAM.SC_CLIP.MULTI_LEVEL_LAYERS", "(4, 2)"),
             r"MODEL.CDAM.SC_CLIP.MULTI_LEVEL_LAYERS \(4, 2\) must be \[start, end\)"),
            (("MODEL.CDAM.BASE", "resclip", "MODEL.CDAM.RESCLIP.RCS_LAYERS", "(3, 1)"),
             r"MODEL.CDAM.RESCLIP.RCS_LAYERS \(3, 1\) must be \[start, end\)"),
            (("MODEL.CDAM.BASE", "resclip", "MODEL.CDAM.RESCLIP.SFR_WEIGHTS", "(2.2,)"),
             r"MODEL.CDAM.RESCLIP.SFR_WEIGHTS \(2.2,\) must be \(tau, lambda\)"),
            (("MODEL.CDAM.BASE", "resclip", "MODEL.CDAM.RESCLIP.SFR_THRESHOLD", "1.5"),
             r"MODEL.CDAM.RESCLIP.SFR_THRESHOLD 1.5 must be in \[0, 1\]"),
            (("MODEL.CDAM.BASE", "resclip", "MODEL.CDAM.RESCLIP.SFR_PAMR_STEPS", "-1"),
             "MODEL.CDAM.RESCLIP.SFR_PAMR_STEPS -1 must be >= 0"),
            (("MODEL.CDAM.BASE", "resclip", "MODEL.CDAM.RESCLIP.SFR_PAMR_DILATIONS", "(0, 16)"),
             r"MODEL.CDAM.RESCLIP.SFR_PAMR_DILATIONS \(0, 16\) must be positive"),
        )
        for opts, message in cases:
            with self.subTest(opts=opts), self.assertRaisesRegex(ValueError, message):
                self.build_without_clip(*opts)

    def test_valid_values_reach_clip(self):
        # the layer defaults of the 2025 bases need the tower's depth: checked once it is built
        for opts in ((), ("MODEL.CDAM.BASE", "sc_clip"), ("MODEL.CDAM.BASE", "resclip"),
                     ("MODEL.CDAM.SLIDE_CROP", "0", "MODEL.CDAM.SLIDE_STRIDE", "500"),
                     ("MODEL.CDAM.BACKGROUND_RULE", "fixed", "MODEL.CDAM.BACKGROUND_THRESHOLD", "1.0")):
            with self.subTest(opts=opts), self.assertRaisesRegex(AssertionError, "CLIP was built"):
                self.build_without_clip(*opts)

    def test_background_threshold_without_the_fixed_rule_warns(self):
        from cdam_d2.cdam.meta_arch import validate_options

        for rule in ("entropy", "none"):
            with self.subTest(rule=rule), self.assertLogs("cdam_d2.cdam.meta_arch", "WARNING") as logs:
                validate_options(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.BACKGROUND_RULE", rule,
                                         "MODEL.CDAM.BACKGROUND_THRESHOLD", "0.3"))
            self.assertIn("BACKGROUND_THRESHOLD 0.3 has no effect", "\n".join(logs.output))
            self.assertIn(repr(rule), "\n".join(logs.output))
        for opts in (("MODEL.CDAM.BACKGROUND_RULE", "fixed", "MODEL.CDAM.BACKGROUND_THRESHOLD", "0.3"),
                     ("MODEL.CDAM.BACKGROUND_RULE", "entropy")):
            with self.subTest(opts=opts), self.assertNoLogs("cdam_d2.cdam.meta_arch", "WARNING"):
                validate_options(toy_cfg(CDAM_TOY_CONFIG, *opts))


if __name__ == "__main__":
    unittest.main()
