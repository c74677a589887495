#!/usr/bin/env python
"""CDAM demo: segment images with any vocabulary and save overlays with a legend.

    python tools/demo.py --config-file configs/cdam_voc21.yaml --input a.jpg photos/ \\
        --vocabulary "background; cat; dog; sofa, couch" --output out/

';' separates classes, ',' separates synonyms of one class (the class score is the max over its synonyms).
Pixels below the entropy threshold go to the FIRST class, so start the vocabulary with a background-like
class (or pass MODEL.CDAM.ALPHA 0 to disable the threshold). Without --vocabulary, the classes of the
dataset (--dataset, default DATASETS.TEST[0]) are used.
"""
import argparse
import os

import numpy as np
import torch
import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def parse_args(argv=None):
    from cdam_d2.engine.cli import add_unsafe_config_flag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders of images")
    parser.add_argument("--output", required=True, help="folder for the overlay PNGs")
    parser.add_argument("--vocabulary", default="", help='e.g. "background; cat; dog; sofa, couch"')
    parser.add_argument("--dataset", default="", help="registered dataset whose classes to use")
    parser.add_argument("--opacity", type=float, default=0.5)
    add_unsafe_config_flag(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def setup_cfg(args):
    from cdam_d2.engine import load_cfg

    cfg, fallbacks = load_cfg(args.config_file, args.opts, allow_unsafe_yaml=args.allow_unsafe_config)
    for message in fallbacks:
        print(f"Warning: {message}")
    cfg.freeze()
    return cfg


def list_images(inputs):
    """Files as given, folders expanded to their images (sorted); each image once."""
    paths = []
    for entry in inputs:
        if os.path.isdir(entry):
            paths.extend(os.path.join(entry, name) for name in sorted(os.listdir(entry))
                         if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(entry):
            paths.append(entry)
        else:
            raise FileNotFoundError(f"--input {entry!r} is neither an image file nor a folder")
    if not paths:
        raise FileNotFoundError(f"no images found in --input {inputs}")
    return list(dict.fromkeys(os.path.abspath(path) for path in paths))


def vocabulary_and_metadata(args, cfg, model):
    """Text queries and a Metadata with class names and colours for the legend."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.catalog import Metadata
    from detectron2.utils.colormap import colormap

    from cdam_d2.modeling.cdam.vocabulary import parse_vocabulary_string

    if args.vocabulary:
        vocabulary = parse_vocabulary_string(args.vocabulary)
        first_synonyms = {}
        for name, class_index in zip(vocabulary.queries, vocabulary.query_to_class):
            first_synonyms.setdefault(class_index, name)
        names = [first_synonyms[i] for i in range(vocabulary.num_classes)]
        queries = model.text_queries(vocabulary)
    else:
        dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "")
        if not dataset:
            raise ValueError("give --vocabulary or --dataset (the config has no DATASETS.TEST)")
        names = list(MetadataCatalog.get(dataset).stuff_classes)
        queries = model.dataset_queries(dataset)
    palette = colormap(rgb=True, maximum=255)
    colors = [tuple(int(c) for c in palette[i % len(palette)]) for i in range(len(names))]
    return queries, Metadata(name="cdam_demo", stuff_classes=names, stuff_colors=colors)


def save_overlay(image, labels, metadata, path, opacity):
    """Detectron2 Visualizer overlay plus a legend of the classes present."""
    from matplotlib.patches import Patch

    from detectron2.utils.visualizer import Visualizer

    visualizer = Visualizer(image, metadata)
    output = visualizer.draw_sem_seg(labels, alpha=opacity)
    present = [int(i) for i in np.unique(labels)]
    handles = [Patch(color=np.array(metadata.stuff_colors[i]) / 255, label=metadata.stuff_classes[i]) for i in present]
    output.ax.legend(handles=handles, loc="upper right", fontsize=max(8, image.shape[0] // 60), framealpha=0.8)
    output.save(path)


def main(argv=None):
    from detectron2.data import detection_utils
    from detectron2.modeling import build_model

    from cdam_d2.data.transforms.cdam_resize import resize_image

    args = parse_args(argv)
    cfg = setup_cfg(args)
    model = build_model(cfg).eval()
    queries, metadata = vocabulary_and_metadata(args, cfg, model)
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(list_images(args.input), desc="CDAM demo", unit="image"):
        image = detection_utils.read_image(path, format="RGB")
        resized = resize_image(image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        scores = model.segment(torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
                               image.shape[0], image.shape[1], queries)
        stem = os.path.splitext(os.path.basename(path))[0]
        save_overlay(image, scores.argmax(0).cpu().numpy(), metadata, os.path.join(args.output, f"{stem}.png"),
                     args.opacity)


if __name__ == "__main__":
    main()
