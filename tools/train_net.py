#!/usr/bin/env python
"""Train or evaluate CDAM / ClusterCAM with Detectron2's trainer and launcher.

    python tools/train_net.py --config-file configs/cdam_voc21.yaml --eval-only
    python tools/train_net.py --config-file configs/clustercam_voc.yaml --num-gpus 1

Config files are read as plain data: a Python YAML tag is refused unless --allow-unsafe-config is given.
"""
from detectron2.engine import launch

from cdam_d2.engine import argument_parser, main


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
