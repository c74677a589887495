#!/usr/bin/env python
"""Train or evaluate CDAM / ClusterCAM with Detectron2's trainer and launcher.

    python tools/train_net.py --config-file configs/cdam_voc21.yaml --eval-only
    python tools/train_net.py --config-file configs/clustercam_voc.yaml --num-gpus 1

Config files are read as plain data: a Python YAML tag is refused unless --allow-unsafe-config is given.
"""
from cdam_d2.engine.cli import run_from_command_line

if __name__ == "__main__":
    run_from_command_line()
