#!/usr/bin/env python
"""Train or evaluate a second-stage DeepLab (Detectron2's DeepLab project) on exported pseudo-labels.

    python tools/train_second_stage.py --config-file configs/second_stage/deeplabv3plus_R103_voc.yaml \
        --num-gpus 1 CDAM_D2.PSEUDO_LABELS.DIR pseudo/voc
    python tools/train_second_stage.py --config-file configs/second_stage/deeplabv3plus_R103_voc.yaml \
        --eval-only MODEL.WEIGHTS output/second_stage_voc/model_final.pth

Same arguments as tools/train_net.py (Detectron2's default_argument_parser). The pseudo-label folder
is the config key CDAM_D2.PSEUDO_LABELS.DIR (saved with the run's config.yaml); every process
registers it as the dataset CDAM_D2.PSEUDO_LABELS.NAME.
"""
from cdam_d2.engine.cli import run_from_command_line
from cdam_d2.second_stage.cli import main

if __name__ == "__main__":
    run_from_command_line(main)
