"""Every shipped CDAM benchmark config evaluates through tools/train_net.py's ``main`` on its toy layout."""
import math
import os
import tempfile
import unittest

from tests.helpers import CONFIGS, one_template_file, point_builtin_datasets_at, requires_detectron2, slow

# The 8 datasets of the training-free open-vocabulary protocol: config -> (dataset, classes, threshold on).
BENCHMARK_CONFIGS = {
    "cdam_voc21.yaml": ("cdam_voc21_sem_seg_val", 21, True),
    "cdam_context60.yaml": ("cdam_context60_sem_seg_val", 60, True),
    "cdam_coco_object.yaml": ("cdam_coco_object_sem_seg_val", 81, True),
    "cdam_voc20.yaml": ("cdam_voc20_sem_seg_val", 20, False),
    "cdam_context59.yaml": ("cdam_context59_sem_seg_val", 59, False),
    "cdam_coco_stuff171.yaml": ("cdam_coco_stuff171_sem_seg_val", 171, False),
    "cdam_cityscapes19.yaml": ("cityscapes_fine_sem_seg_val", 19, False),
    "cdam_ade20k150.yaml": ("ade20k_sem_seg_val", 150, False),
}


@slow
@requires_detectron2
class BenchmarkConfigsTest(unittest.TestCase):
    def test_every_benchmark_config_evaluates_on_its_toy_layout(self):
        from cdam_d2.data.datasets import default_datasets_root
        from cdam_d2.data.datasets.register import register_all_cdam_datasets
        from cdam_d2.data.toy import make_toy_datasets
        from cdam_d2.engine import argument_parser, load_cfg, main

        shipped = {name for name in os.listdir(CONFIGS) if name.startswith("cdam_")}
        self.assertEqual(shipped, set(BENCHMARK_CONFIGS))
        # Later tests see every name under $DETECTRON2_DATASETS again.
        self.addCleanup(point_builtin_datasets_at, default_datasets_root())
        self.addCleanup(register_all_cdam_datasets, default_datasets_root())
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "datasets")
            counts = make_toy_datasets(root)
            register_all_cdam_datasets(root)  # cdam_* names now read the toy root
            point_builtin_datasets_at(root)
            templates = one_template_file(tmp)
            for config, (dataset, num_classes, threshold_on) in BENCHMARK_CONFIGS.items():
                with self.subTest(config):
                    args = argument_parser().parse_args([
                        "--config-file", os.path.join(CONFIGS, config), "--eval-only",
                        "MODEL.DEVICE", "cpu", "MODEL.CDAM.CLIP_MODEL", "tiny:ViT-B-16",
                        "MODEL.CDAM.CLIP_WEIGHTS", "random", "MODEL.CDAM.TEMPLATES", templates,
                        "MODEL.CDAM.TEXT_CACHE_DIR", "", "MODEL.CDAM.SLIDE_CROP", "64",
                        "MODEL.CDAM.SLIDE_STRIDE", "32", "INPUT.MIN_SIZE_TEST", "96",
                        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", os.path.join(tmp, config)])
                    results = main(args)
                    self.assertEqual(sum(key.startswith("IoU-") for key in results["sem_seg"]), num_classes)
                    self.assertFalse(math.isnan(results["sem_seg"]["mIoU"]))
                    self.assertGreater(counts[dataset], 0)
                    cfg = load_cfg(os.path.join(CONFIGS, config))[0]
                    self.assertEqual(cfg.DATASETS.TEST, (dataset,))
                    self.assertEqual(cfg.MODEL.CDAM.ALPHA > 0, threshold_on)


if __name__ == "__main__":
    unittest.main()
