#!/usr/bin/env python
"""Convert an official ClusterCAM checkpoint (ClusterCAM_VOC.pth / ClsuterCAM_COCO.pth, keys prefixed
``module.``) into a Detectron2 checkpoint for the ``ClusterCAM`` meta-architecture.

    python tools/convert_clustercam_checkpoint.py ClusterCAM_VOC.pth clustercam_voc_official.pth
    python tools/train_net.py --config-file configs/clustercam_voc.yaml --eval-only \
        MODEL.WEIGHTS clustercam_voc_official.pth
"""
import argparse
import os

import torch

from cdam_d2.clustercam.modeling import convert_official_checkpoint
from cdam_d2.weights import WeightsFileError, read_weights_file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args(argv)
    try:
        state, _ = read_weights_file(os.path.expanduser(args.source), "the source argument", what_to_do=(
            "download it again, or re-save only its 'model' state dict with torch.save in a trusted environment"))
    except (FileNotFoundError, WeightsFileError) as exc:
        raise SystemExit(str(exc))
    converted = convert_official_checkpoint(state, prefix="net.")
    torch.save({"model": converted, "__author__": "ClusterCAM (converted)"}, os.path.expanduser(args.target))
    print(f"wrote {len(converted)} tensors to {args.target}")


if __name__ == "__main__":
    main()
