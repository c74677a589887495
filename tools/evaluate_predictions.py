#!/usr/bin/env python
"""Score a folder of label PNGs or CAM dictionaries against a registered dataset's ground truth.

    # pseudo-labels ("mask" quality)
    python tools/evaluate_predictions.py --dataset cdam_voc21_sem_seg_train_aug --predictions pseudo/voc
    # CAM seeds at one background threshold, or a sweep of thresholds 0.00 .. 0.59
    python tools/evaluate_predictions.py --dataset cdam_voc21_sem_seg_train_aug --predictions cams/voc \
        --type npy --threshold 0.4
    python tools/evaluate_predictions.py --dataset cdam_voc21_sem_seg_train_aug --predictions cams/voc \
        --type npy --curve 0 60 --output seed_curve.json

``--type png``: ``<image_id>.png`` class-index maps (either method's exports, or another project's);
the ignore value counts as a miss of the pixel's class. ``--type npy``: ``<image_id>.npy`` dictionaries
{foreground class index (0-based): (H, W) float map} as the WSSS releases (and
``tools/export_pseudo_labels.py --kind cam-npy``) write them; the background scores the threshold, so a
pixel is foreground where a class map exceeds it. ``--curve START END`` sweeps START/100 .. (END-1)/100
and reports each threshold and the best.

Reported: per-class IoU, mIoU, and FP and FN (the means over classes of (P-TP)/union and (T-TP)/union),
as a table and, with ``--output``, as JSON. The default metric convention is the releases' (every class
in the mean, a class absent from prediction and ground truth counting 0); ``--convention detectron2``
averages over the classes present in the ground truth. Each table names its convention.
"""
import argparse
import logging
import sys

logger = logging.getLogger("cdam_d2.evaluate_predictions")


def build_parser():
    from cdam_d2.evaluation.metrics import CONVENTIONS
    from cdam_d2.evaluation.prediction_folder import PREDICTION_TYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="registered dataset with label maps, e.g. "
                                                         "cdam_voc21_sem_seg_train_aug")
    parser.add_argument("--predictions", required=True, help="folder of <image_id>.png or <image_id>.npy files")
    parser.add_argument("--type", choices=PREDICTION_TYPES, default="png")
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--threshold", type=float, help="background score of CAM dictionaries (--type npy)")
    sweep.add_argument("--curve", nargs=2, type=int, metavar=("START", "END"),
                       help="sweep background thresholds START/100 .. (END-1)/100 (--type npy)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="release",
                        help="how IoUs are averaged (default: the WSSS releases' script)")
    parser.add_argument("--output", help="write the results as JSON to this file")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: all usable cores)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score images without a prediction file as all-ignore predictions instead of failing")
    return parser


def thresholds_from_args(parser, args):
    from cdam_d2.evaluation.prediction_folder import curve_thresholds

    if args.type == "png":
        if args.threshold is not None or args.curve:
            parser.error("--threshold and --curve apply to CAM dictionaries (--type npy), not to label PNGs")
        return None
    if args.curve:
        try:
            return curve_thresholds(*args.curve)
        except ValueError as error:
            parser.error(str(error))
    if args.threshold is None:
        parser.error("--type npy needs a background score: --threshold T (e.g. 0.4) or --curve START END (e.g. 0 60)")
    return [args.threshold]


def dataset_items(name):
    """(GroundTruth items, class names, ignore label) of a registered dataset."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cdam_d2.data.datasets.pseudo_labels import record_image_id
    from cdam_d2.evaluation.prediction_folder import GroundTruth

    if name not in DatasetCatalog.list():
        raise KeyError(f"Dataset '{name}' is not registered; `import cdam_d2` registers the cdam_* names "
                       "(set DETECTRON2_DATASETS to their root).")
    records = DatasetCatalog.get(name)
    unlabelled = [record["file_name"] for record in records if "sem_seg_file_name" not in record]
    if unlabelled:
        raise ValueError(f"Dataset '{name}' has {len(unlabelled)} images without label maps (e.g. {unlabelled[0]}); "
                         "choose a split with ground truth.")
    meta = MetadataCatalog.get(name)
    classes = meta.get("stuff_classes", None)
    if not classes:
        raise ValueError(f"Dataset '{name}' has no stuff_classes metadata, so its classes are unknown.")
    items = [GroundTruth(record_image_id(record), record["sem_seg_file_name"]) for record in records]
    return items, list(classes), meta.get("ignore_label", 255)


def fail(message):
    """Print ``message`` as the error of the command line; returns its exit status."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    thresholds = thresholds_from_args(parser, args)
    from detectron2.utils.logger import setup_logger

    import cdam_d2  # noqa: F401  (registers the datasets)
    from cdam_d2.evaluation.prediction_folder import folder_metrics, format_report, score_folder, write_report

    setup_logger(name="cdam_d2")
    try:  # an unregistered dataset (KeyError), one without label maps or classes, or its files missing
        items, classes, ignore_label = dataset_items(args.dataset)
    except (KeyError, ValueError, FileNotFoundError) as error:
        return fail(error.args[0] if isinstance(error, KeyError) else error)  # KeyError's str() adds quotes
    try:  # a missing folder or prediction, a stray file, a file of the wrong size or values, empty labels
        score = score_folder(items, args.predictions, args.type, len(classes), ignore_label, thresholds,
                             workers=args.workers, allow_missing=args.allow_missing)
    except (ValueError, FileNotFoundError) as error:
        return fail(error)
    report = folder_metrics(score, classes, args.convention)
    report.update(dataset=args.dataset, predictions=args.predictions, type=args.type, num_images=len(items))
    print(format_report(report, classes))
    if args.output:
        write_report(report, args.output)
        print(f"Results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
