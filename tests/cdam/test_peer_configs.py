"""configs/peers: each peer's protocol as its release states it, every config builds with the tiny model, and every
voc21 protocol evaluates on the toy VOC data with labels equal to the peer's post-processing written out here."""
import glob
import math
import os
import tempfile
import unittest

import torch
import torch.nn.functional as F

from tests.cdam.test_background_rules import peer_labels
from tests.helpers import REPO, RegisteredToyDatasets, requires_detectron2, slow

PEERS = os.path.join(REPO, "configs", "peers")
DATASETS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171", "cityscapes19", "ade20k150")
# The peers' name files (configs/cls_<name>.txt in their repositories) for each benchmark.
NAME_FILES = {"voc21": "voc21", "context60": "context60", "coco_object": "coco_object", "voc20": "voc20",
              "context59": "context59", "coco_stuff171": "coco_stuff", "cityscapes19": "city_scapes",
              "ade20k150": "ade20k"}
# What each release's configs say: base settings, then per dataset (configs/cfg_<dataset>.py) the changes.
# Keys: short side, crop, stride, logit scale, fixed threshold (0: none), area threshold, PAMR steps, padding.
SCLIP = dict(short=336, crop=224, stride=112, scale=40.0, threshold=0.0, area=0.0, pamr=0, pad=False)
NACLIP = dict(SCLIP, pamr=10)
CLEARCLIP = dict(short=448, crop=448, stride=224, scale=50.0, threshold=0.0, area=0.0, pamr=0, pad=True)
PROTOCOLS = {
    "sclip": (SCLIP, {"voc21": dict(scale=65.0, threshold=0.1, area=0.1), "context60": dict(scale=50.0, threshold=0.1),
                      "coco_object": dict(scale=50.0, threshold=0.1), "coco_stuff171": dict(short=448),
                      "cityscapes19": dict(short=560)}),
    "naclip": (NACLIP, {"voc21": dict(crop=0, threshold=0.1), "context60": dict(threshold=0.1),
                        "coco_object": dict(threshold=0.1), "voc20": dict(crop=0), "cityscapes19": dict(short=560)}),
    "clearclip": (CLEARCLIP, {"voc21": dict(threshold=0.5), "context60": dict(threshold=0.15),
                              "coco_object": dict(threshold=0.4), "cityscapes19": dict(crop=224, stride=224)}),
}
# Folder -> (base, last block, name files, protocol): ClearCLIP's modes and GEM use ClearCLIP's protocol;
# NACLIP's name files are SCLIP's, byte for byte, shipped once.
FOLDERS = {
    "sclip": ("sclip", "auto", "sclip", "sclip"),
    "naclip": ("naclip", "auto", "sclip", "naclip"),
    "clearclip": ("clearclip", "auto", "clearclip", "clearclip"),
    "clearclip_vanilla": ("clip", "reduced", "clearclip", "clearclip"),
    "clearclip_maskclip": ("maskclip", "reduced", "clearclip", "clearclip"),
    "clearclip_gem": ("gem", "reduced", "clearclip", "clearclip"),
    "gem": ("gem", "auto", "clearclip", "clearclip"),
}
WITH_CDAM = ("sclip", "naclip", "clearclip", "gem")


def load(path, *opts):
    from cdam_d2.engine import load_cfg

    return load_cfg(path, ["MODEL.DEVICE", "cpu", *opts])[0]


def tiny_opts(templates):
    return ["MODEL.CDAM.CLIP_MODEL", "tiny:ViT-B-16", "MODEL.CDAM.CLIP_WEIGHTS", "random",
            "MODEL.CDAM.TEMPLATES", templates, "MODEL.CDAM.TEXT_CACHE_DIR", ""]


@requires_detectron2
class TestPeerProtocols(unittest.TestCase):
    def test_every_config_states_its_peers_protocol(self):
        from cdam_d2.cdam.modeling.vocabulary import read_class_names_file

        expected_files = {f"{folder}/{dataset}{suffix}.yaml" for folder in FOLDERS for dataset in DATASETS
                          for suffix in ("", "_cdam") if not suffix or folder in WITH_CDAM}
        shipped = {os.path.relpath(path, PEERS) for path in glob.glob(os.path.join(PEERS, "*", "*.yaml"))
                   if not os.path.basename(path).startswith("Base-")}
        # The 2025 bases' protocols (sc_clip/, resclip/) are checked in test_bases_2025.py.
        shipped = {path for path in shipped if path.split("/")[0] not in ("sc_clip", "resclip")}
        self.assertEqual(shipped, expected_files)
        for folder, (base, last_block, names, protocol) in FOLDERS.items():
            defaults, per_dataset = PROTOCOLS[protocol]
            for dataset in DATASETS:
                with self.subTest(folder=folder, dataset=dataset):
                    cfg = load(os.path.join(PEERS, folder, f"{dataset}.yaml"))
                    cdam = load(os.path.join(REPO, "configs", f"cdam_{dataset}.yaml"))
                    options, want = cfg.MODEL.CDAM, dict(defaults, **per_dataset.get(dataset, {}))
                    self.assertEqual(cfg.DATASETS.TEST, cdam.DATASETS.TEST)
                    self.assertEqual((options.BASE, options.LAST_BLOCK, options.USE_CDAM), (base, last_block, False))
                    self.assertEqual(options.POS_EMBED_RESAMPLING, "auto")
                    self.assertEqual((cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST), (want["short"], 2048))
                    self.assertEqual((options.SLIDE_CROP, options.LOGIT_SCALE), (want["crop"], want["scale"]))
                    if want["crop"]:
                        self.assertEqual(options.SLIDE_STRIDE, want["stride"])
                    rule = "fixed" if want["threshold"] else "none"
                    self.assertEqual(options.BACKGROUND_RULE, rule)
                    if want["threshold"]:
                        self.assertEqual(options.BACKGROUND_THRESHOLD, want["threshold"])
                    self.assertEqual(options.AREA_THRESHOLD, want["area"])
                    self.assertEqual(options.PAMR_STEPS, want["pamr"])
                    if want["pamr"]:
                        self.assertEqual(tuple(options.PAMR_DILATIONS), (8, 16))
                    self.assertEqual(options.PAD_WINDOWS, want["pad"])
                    self.assertEqual(options.CLASS_NAMES_FILE, f"peers/{names}/cls_{NAME_FILES[dataset]}.txt")
                    vocabulary = read_class_names_file(options.CLASS_NAMES_FILE)
                    # as many classes as this package's own names for the dataset (its evaluator's classes)
                    own = cdam.MODEL.CDAM.CLASS_NAMES_FILE or dataset_names_file(cdam.DATASETS.TEST[0])
                    self.assertEqual(vocabulary.num_classes, read_class_names_file(own).num_classes)
                    if folder in WITH_CDAM:
                        on_top = load(os.path.join(PEERS, folder, f"{dataset}_cdam.yaml"))
                        self.assertTrue(on_top.MODEL.CDAM.USE_CDAM)
                        on_top.MODEL.CDAM.USE_CDAM = False
                        on_top.OUTPUT_DIR = cfg.OUTPUT_DIR
                        self.assertEqual(on_top, cfg)  # the same protocol otherwise

    @slow  # about 90 models
    def test_every_config_builds_with_the_tiny_model(self):
        from detectron2.modeling import build_model

        with tempfile.TemporaryDirectory() as folder:
            templates = one_template_file(folder)
            # The 2025 bases' configs need layer keys that fit the tiny tower: test_bases_2025.py builds them.
            for path in sorted(glob.glob(os.path.join(PEERS, "*", "*.yaml"))):
                if os.path.relpath(path, PEERS).split(os.sep)[0] in ("sc_clip", "resclip"):
                    continue
                with self.subTest(config=os.path.relpath(path, PEERS)):
                    model = build_model(load(path, *tiny_opts(templates)))
                    self.assertEqual(model.segmentor.encoder.base, load(path).MODEL.CDAM.BASE)


@slow
@requires_detectron2
class TestVOC21ProtocolsEndToEnd(RegisteredToyDatasets, unittest.TestCase):
    def test_voc21_configs_evaluate_with_the_peers_labels(self):
        from detectron2.data import DatasetCatalog
        from detectron2.modeling import build_model

        from cdam_d2.cdam.mapper import CDAMTestMapper
        from cdam_d2.cdam.modeling.pamr import refine_masks
        from cdam_d2.engine import Trainer

        records = DatasetCatalog.get("cdam_voc21_sem_seg_val")[:2]
        with tempfile.TemporaryDirectory() as folder:
            templates = one_template_file(folder)
            configs = [f"{folder_name}/voc21.yaml" for folder_name in FOLDERS] + ["sclip/voc21_cdam.yaml"]
            for config in configs:
                with self.subTest(config=config):
                    cfg = load(os.path.join(PEERS, config), *tiny_opts(templates), "DATALOADER.NUM_WORKERS", 0,
                               "OUTPUT_DIR", os.path.join(folder, config))
                    model = build_model(cfg).eval()
                    results = Trainer.test(cfg, model)["sem_seg"]
                    self.assertEqual(sum(key.startswith("IoU-") for key in results), 21)
                    self.assertFalse(math.isnan(results["mIoU"]))
                    options = cfg.MODEL.CDAM
                    mapper = CDAMTestMapper(cfg, dataset_name="cdam_voc21_sem_seg_val")
                    queries = model.dataset_queries("cdam_voc21_sem_seg_val")
                    for record in map(mapper, records):
                        size = (record["height"], record["width"])
                        with torch.no_grad():
                            labels = model([record])[0]["sem_seg"].argmax(0)
                            image = model.normalize(record["image"])
                            merged, _ = model.segmentor.merged_logits(image, queries)
                        logits = F.interpolate(merged[None], size=size, mode="bilinear", align_corners=False)
                        if options.PAMR_STEPS:
                            guide = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
                            logits = refine_masks(guide, logits, options.PAMR_STEPS, options.PAMR_DILATIONS)
                        expected = peer_labels(logits[0], options.LOGIT_SCALE, queries.query_to_class,
                                               options.BACKGROUND_THRESHOLD, options.AREA_THRESHOLD or None)
                        self.assertTrue(torch.equal(labels, expected))


def one_template_file(folder):
    path = os.path.join(folder, "templates.txt")
    with open(path, "w") as f:
        f.write("a photo of a {}.\n")
    return path


def dataset_names_file(dataset_name):
    from cdam_d2.data.datasets.class_names import class_names_file_for

    return class_names_file_for(dataset_name)


if __name__ == "__main__":
    unittest.main()
