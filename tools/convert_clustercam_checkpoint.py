#!/usr/bin/env python
"""Convert an official ClusterCAM checkpoint (ClusterCAM_VOC.pth / ClsuterCAM_COCO.pth, keys prefixed
``module.``) into a Detectron2 checkpoint for the ``ClusterCAM`` meta-architecture.

    python tools/convert_clustercam_checkpoint.py ClusterCAM_VOC.pth clustercam_voc_official.pth
    python tools/train_net.py --config-file configs/clustercam_voc.yaml --eval-only \
        MODEL.WEIGHTS clustercam_voc_official.pth
"""
import argparse

import torch

from cdam_d2.modeling.clustercam import convert_official_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args(argv)
    try:
        state = torch.load(args.source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SystemExit(f"{args.source} could not be read as plain tensors (weights_only=True): {exc}. "
                         "Re-save only its 'model' state dict with torch.save in a trusted environment.")
    converted = convert_official_checkpoint(state, prefix="net.")
    torch.save({"model": converted, "__author__": "ClusterCAM (converted)"}, args.target)
    print(f"wrote {len(converted)} tensors to {args.target}")


if __name__ == "__main__":
    main()
