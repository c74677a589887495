#!/usr/bin/env python
"""Write ClusterCAM pseudo-labels, plain CAM label maps or CAM dictionaries of a dataset split.

    python tools/export_pseudo_labels.py --config-file configs/clustercam_voc.yaml \
        --dataset cdam_voc21_sem_seg_train_aug --output pseudo/voc MODEL.WEIGHTS model_final.pth

Everything is computed at the original image size from the image-level labels: multi-scale
(PSEUDO_LABEL.CAM_SCALES) CAMs, each the max of the image's and its flip's, summed over scales,
min-max normalised per class (the CAMs the pseudo-labels of training come from). Then:

- ``--kind labels`` (default): ``<image_id>.png`` (uint8: 0 background, c = class id, 255 ignore), the
  background band + PAR refinement used in training;
- ``--kind cam``: ``<image_id>.png``, the plain argmax over [BG_THR; CAMs];
- ``--kind cam-npy``: ``<image_id>.npy``, a dictionary {foreground class index (0-based): (H, W) float32
  CAM} of the image's classes, the layout of the WSSS releases; ``tools/evaluate_predictions.py --type npy``
  scores it at any background threshold (at BG_THR it gives the ``--kind cam`` maps).

Each file is written to a temporary name and then renamed, and a re-run skips the files that are complete
(a PNG that decodes at its image's size, a dictionary that loads with the image's classes at its size), so
an interrupted run resumes and a file damaged afterwards is written again (``cdam_d2.data.label_export``).
"""
import argparse
import logging

import numpy as np
import torch

logger = logging.getLogger("cdam_d2.export_pseudo_labels")

KINDS = ("labels", "cam", "cam-npy")


def parse_args(argv=None):
    from cdam_d2.engine.cli import add_unsafe_config_flag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", required=True, help="registered dataset name with image_labels")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--kind", choices=KINDS, default="labels")
    parser.add_argument("--train-mode", action="store_true",
                        help="compute CAMs with DropPath active (as in training); default: eval mode")
    add_unsafe_config_flag(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS path")
    return parser.parse_args(argv)


def setup_cfg(args):
    from cdam_d2.engine import load_cfg

    cfg, fallbacks = load_cfg(args.config_file, args.opts, allow_unsafe_yaml=args.allow_unsafe_config)
    for message in fallbacks:
        print(f"Warning: {message}")
    if cfg.MODEL.META_ARCHITECTURE != "ClusterCAM":
        raise ValueError(f"{args.config_file} is not a ClusterCAM config "
                         f"(MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE})")
    cfg.freeze()
    return cfg


def export(cfg, dataset_name, output_dir, kind="labels", train_mode=False):
    """Returns (written, skipped) counts."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from cdam_d2.data.label_export import CamDictWriter, LabelPNGWriter, export_label_maps
    from cdam_d2.clustercam.mapper import ClusterCAMDatasetMapper
    from cdam_d2.engine.checkpoint import CoveringCheckpointer
    from cdam_d2.clustercam.modeling import cams_to_labels

    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r} is not one of {KINDS}")
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        CoveringCheckpointer.from_cfg(model, cfg).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting labels of an untrained ClusterCAM head.")
    model.eval()
    mapper = ClusterCAMDatasetMapper(cfg, is_train=False)
    records = DatasetCatalog.get(dataset_name)

    def classes_of(record):
        if "image_labels" not in record:
            raise KeyError(f"dataset '{dataset_name}' record {record['file_name']} has no image_labels")
        return [label - 1 for label in record["image_labels"]]

    def predict(batch):
        (record,) = batch
        classes_of(record)
        image = model.normalize(mapper(record)["image"]).unsqueeze(0)
        labels = model.multi_hot_labels([record])
        with torch.no_grad():
            cams = model.class_activation_maps(image, labels, train_mode=train_mode)
            if kind == "cam-npy":
                return [{k: cams[0, k].float().cpu().numpy() for k in classes_of(record)}]
            if kind == "labels":
                label_map = model.refine_pseudo_labels(image, labels, cams)[0]
            else:
                label_map = cams_to_labels(cams, model.bg_thr)[0]
        return [label_map.cpu().numpy().astype(np.uint8)]

    # Both writers also clear temp files of an interrupted run.
    writer = CamDictWriter(output_dir, classes_of) if kind == "cam-npy" else LabelPNGWriter(output_dir)
    return export_label_maps(([r] for r in records), writer, predict, len(records), f"{kind} {dataset_name}")


def main(argv=None):
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="cdam_d2")
    cfg = setup_cfg(args)
    written, skipped = export(cfg, args.dataset, args.output, args.kind, args.train_mode)
    what = "CAM dictionaries" if args.kind == "cam-npy" else "label maps"
    logger.info("wrote %d %s to %s (%d already present)", written, what, args.output, skipped)


if __name__ == "__main__":
    main()
