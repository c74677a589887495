#!/usr/bin/env python
"""Draw one panel per image of a dataset: the maps a ClusterCAM or CDAM config computes.

    python tools/visualize.py --config-file configs/clustercam_voc.yaml --dataset cdam_voc21_sem_seg_train_aug \
        --num 8 --output panels/ MODEL.WEIGHTS output/clustercam_voc/model_final.pth
    python tools/visualize.py --config-file configs/cdam_voc21.yaml --dataset cdam_voc21_sem_seg_val \
        --images 2007_000033 --patch 250,180 --output panels/

ClusterCAM: input, ground truth, pseudo-label and prediction, then per class of the image (its image-level
labels, else the classes of its label map) the ClusterCAM, the patch-to-class and the cluster-to-class
attention, and their mix that weights the CAM, as heat maps over the image (colour bars give each scale).
CDAM: input, ground truth, the base's patch-logit arg-max, CDAM's prediction, and for the patch under
``--patch x,y`` (image pixels; default the centre) the CDAM attention map next to the base's own attention,
over the sliding window that holds it. Each panel is written to ``<output>/<image_id>.png``.
"""
import argparse
import logging
import os
import sys

import numpy as np

logger = logging.getLogger("cdam_d2.visualize")


def build_parser():
    from cdam_d2.engine.cli import add_unsafe_config_flag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", required=True, help="registered dataset to draw images of")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", nargs="+", metavar="ID", help="image ids (file names without extension)")
    which.add_argument("--num", type=int, default=4, help="this many images, evenly spread over the dataset")
    parser.add_argument("--output", required=True, help="folder for <image_id>.png panels")
    parser.add_argument("--patch", help="CDAM: x,y of the patch to inspect, in image pixels (default: the centre)")
    parser.add_argument("--tile-height", type=int, default=240, help="height of every map in the panel, pixels")
    add_unsafe_config_flag(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS path")
    return parser


def parse_point(text):
    try:
        x, y = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--patch {text!r} must be two numbers x,y (image pixels), e.g. --patch 120,80") from None
    return x, y


def select_records(records, dataset, image_ids, num):
    from cdam_d2.data.datasets import spread_subset
    from cdam_d2.data.datasets.pseudo_labels import record_image_id

    if image_ids:
        by_id = {record_image_id(record): record for record in records}
        unknown = [image_id for image_id in image_ids if image_id not in by_id]
        if unknown:
            raise KeyError(f"images {unknown} are not in dataset '{dataset}' (e.g. it has {list(by_id)[:3]})")
        return [by_id[image_id] for image_id in image_ids]
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    return [records[index] for index in spread_subset(num, len(records))]


def shown_classes(record, ground_truth, num_classes):
    """A ClusterCAM image's classes: its image-level labels, else the classes of its label map."""
    if "image_labels" in record:
        return sorted(record["image_labels"])
    if ground_truth is not None:
        return [int(v) for v in np.unique(ground_truth) if 1 <= v <= num_classes]
    raise ValueError(f"{record['file_name']} has neither image-level labels nor a label map, so its classes are "
                     "unknown; draw a split that has one of them.")


def build_model(cfg):
    from detectron2.modeling import build_model as build

    from cdam_d2.engine.checkpoint import CoveringCheckpointer

    model = build(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        CoveringCheckpointer.from_cfg(model, cfg).load(cfg.MODEL.WEIGHTS)
    elif cfg.MODEL.META_ARCHITECTURE == "ClusterCAM":
        logger.warning("MODEL.WEIGHTS is empty: the panels show an untrained ClusterCAM.")
    return model


def draw(cfg, model, dataset, record, point, tile_height, names):
    from cdam_d2.data.datasets.pseudo_labels import record_image_id
    from cdam_d2.data.image_io import read_image_checked
    from cdam_d2.data.label_io import read_label_map

    image = read_image_checked(record, format="RGB")
    ground_truth = read_label_map(record["sem_seg_file_name"]) if "sem_seg_file_name" in record else None
    title = f"{record_image_id(record)} ({dataset})"
    if cfg.MODEL.META_ARCHITECTURE == "ClusterCAM":
        from cdam_d2.clustercam.visualize import draw_panel

        classes = shown_classes(record, ground_truth, model.num_classes)
        return draw_panel(model, image, classes, names, ground_truth, tile_height, title)
    from cdam_d2.cdam.visualize import draw_panel

    x, y = point if point is not None else (image.shape[1] // 2, image.shape[0] // 2)
    return draw_panel(model, image, model.dataset_queries(dataset), (x, y), cfg.INPUT.MIN_SIZE_TEST,
                      cfg.INPUT.MAX_SIZE_TEST, names, ground_truth, tile_height, title)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger
    from PIL import Image

    from cdam_d2.data.datasets.pseudo_labels import record_image_id
    from cdam_d2.engine import load_cfg
    from cdam_d2.utils.files import write_atomically
    from cdam_d2.weights import WeightsError

    setup_logger(name="cdam_d2")
    # Bad arguments, config files, keys or values (yacs reports an unknown key of the overrides with an
    # AssertionError), an unregistered dataset or unknown images, missing or unusable weights: a usage error.
    try:
        point = parse_point(args.patch) if args.patch else None
        cfg, fallbacks = load_cfg(args.config_file, args.opts, allow_unsafe_yaml=args.allow_unsafe_config)
        for message in fallbacks:
            logger.warning(message)
        if cfg.MODEL.META_ARCHITECTURE not in ("ClusterCAM", "CDAM"):
            raise ValueError(f"{args.config_file}: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} has no "
                             "panel; use a ClusterCAM or CDAM config")
        if point is not None and cfg.MODEL.META_ARCHITECTURE != "CDAM":
            raise ValueError("--patch applies to CDAM configs (the patch whose attention is drawn)")
        if args.dataset not in DatasetCatalog.list():
            raise KeyError(f"dataset '{args.dataset}' is not registered (set DETECTRON2_DATASETS for the cdam_* names)")
        records = select_records(DatasetCatalog.get(args.dataset), args.dataset, args.images, args.num)
        model = build_model(cfg)
    except (ValueError, KeyError, FileNotFoundError, AssertionError, WeightsError) as error:
        parser.error(error.args[0] if isinstance(error, KeyError) else str(error))
    names = list(MetadataCatalog.get(args.dataset).get("stuff_classes", []))
    os.makedirs(args.output, exist_ok=True)
    for record in records:
        try:
            panel = draw(cfg, model, args.dataset, record, point, args.tile_height, names)
        except (ValueError, OSError) as error:  # e.g. a --patch outside this image, an unreadable image
            parser.error(f"{record_image_id(record)}: {error}")
        path = os.path.join(args.output, record_image_id(record) + ".png")
        write_atomically(path, lambda temporary: Image.fromarray(panel).save(temporary, format="PNG"))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
