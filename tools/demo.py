#!/usr/bin/env python
"""Segment your own images: CDAM with any vocabulary, or ClusterCAM with its fixed classes.

    python tools/demo.py --config-file configs/cdam_voc21.yaml --input a.jpg photos/ \\
        --vocabulary "background; cat; dog; sofa, couch" --output out/ --opts MODEL.CDAM.ALPHA 0.0

For every image, OUTPUT gets <name>.png (the overlay, with a legend of the classes present and their area
beside it) and <name>_labels.png (the class indices as a palette PNG). Images from different folders keep
their relative folders under OUTPUT, so same-named files never overwrite each other.

';' separates classes, ',' synonyms of one class (its score is the max over its synonyms). With the
background threshold on (MODEL.CDAM.ALPHA > 0), pixels below it go to the FIRST class, so start the
vocabulary with a background-like class, or switch the threshold off with --opts MODEL.CDAM.ALPHA 0.0.
Without --vocabulary the classes of --dataset (default DATASETS.TEST[0]) are used; ClusterCAM configs take
no vocabulary (pass the trained weights: --opts MODEL.WEIGHTS model_final.pth).

Config overrides go after --opts (like Detectron2's demo), so they are never taken for inputs.
Arguments are checked before CLIP is built. An image that cannot be read is reported and skipped; the
exit status is 1 when some images failed, 2 for bad arguments, 0 otherwise.
"""
import argparse
import collections
import os
import re
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def build_parser():
    from cdam_d2.engine.cli import add_unsafe_config_flag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders of images")
    parser.add_argument("--output", required=True, help="folder for the overlays and label PNGs")
    parser.add_argument("--vocabulary", default=None, help='CDAM only, e.g. "background; cat; dog; sofa, couch"')
    parser.add_argument("--dataset", default="", help="registered dataset whose classes to use (CDAM)")
    parser.add_argument("--opacity", type=float, default=0.5, help="weight of the class colours, in [0, 1]")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, KEY VALUE pairs (last argument group)")
    add_unsafe_config_flag(parser)
    return parser


def list_images(inputs):
    """Files as given, folders expanded to their images (sorted); each image once (absolute paths)."""
    paths = []
    for entry in inputs:
        if os.path.isdir(entry):
            paths.extend(os.path.join(entry, name) for name in sorted(os.listdir(entry))
                         if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(entry):
            paths.append(entry)
        elif CONFIG_KEY.match(entry):
            raise ValueError(f"--input {entry!r} looks like a config override: put overrides after --opts, "
                             f"e.g. --opts {entry} VALUE")
        else:
            raise ValueError(f"--input {entry!r} is neither an image file nor a folder")
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in --input {inputs}")
    return list(dict.fromkeys(os.path.abspath(path) for path in paths))


def output_names(paths):
    """Output stem of each input: its path relative to the inputs' common folder without the extension,
    or with it where two inputs would share a stem (a.jpg and a.png)."""
    common = os.path.commonpath([os.path.dirname(path) for path in paths])
    relative = [os.path.relpath(path, common) for path in paths]
    stems = [os.path.splitext(path)[0] for path in relative]
    clashing = {stem for stem, count in collections.Counter(stems).items() if count > 1}
    return [path if stem in clashing else stem for path, stem in zip(relative, stems)]


def check_arguments(args, cfg):
    """Everything that can be wrong with the arguments, before any model is built. Returns the images."""
    from detectron2.data import DatasetCatalog

    from cdam_d2.cdam.predictor import parse_vocabulary
    from cdam_d2.clustercam.predictor import FIXED_CLASSES

    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity {args.opacity} must lie in [0, 1]")
    if cfg.MODEL.META_ARCHITECTURE == "CDAM":
        parse_vocabulary(args.vocabulary)
        if args.vocabulary is None and not (args.dataset or len(cfg.DATASETS.TEST)):
            raise ValueError("give --vocabulary or --dataset (the config has no DATASETS.TEST)")
    elif args.vocabulary is not None:
        raise ValueError(f"--vocabulary: {FIXED_CLASSES}")
    if args.dataset and args.dataset not in DatasetCatalog.list():
        raise ValueError(f"--dataset {args.dataset!r} is not a registered dataset")
    images = list_images(args.input)
    os.makedirs(args.output, exist_ok=True)
    return images


def main(argv=None):
    from cdam_d2.data.image_io import read_image_rgb
    from cdam_d2.engine import predictor as predictors
    from cdam_d2.engine.overlay import class_colors, render_overlay, save_label_png

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = predictors.load_predictor_cfg(args.config_file, args.opts,
                                             allow_unsafe_yaml=args.allow_unsafe_config)
        images = check_arguments(args, cfg)
    except (ValueError, FileNotFoundError, KeyError) as error:  # UnsafeConfigError is a ValueError
        parser.error(str(error))
    predictor = predictors.build_predictor(cfg, args.vocabulary, dataset=args.dataset or None, input_format="RGB")
    colors = class_colors(predictor.names)
    failed = []
    import tqdm

    for path, name in zip(tqdm.tqdm(images, desc="Segmenting", unit="image"), output_names(images)):
        try:
            image = read_image_rgb(path)
        except OSError as error:
            tqdm.tqdm.write(f"Skipped: {error}")
            failed.append(path)
            continue
        result = predictor(image, probabilities=False)
        target = os.path.join(args.output, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        render_overlay(image, result.labels, result.names, args.opacity, colors).save(f"{target}.png")
        save_label_png(result.labels, f"{target}_labels.png", colors)
    print(f"Wrote {len(images) - len(failed)} of {len(images)} images to {args.output}")
    if failed:
        print(f"{len(failed)} image(s) could not be read:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
