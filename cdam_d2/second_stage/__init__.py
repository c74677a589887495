"""Second stage: a fully supervised segmenter (Detectron2's DeepLab) trained on exported pseudo-labels.

- ``config``: ``add_second_stage_config`` (DeepLab's keys and ``CDAM_D2.PSEUDO_LABELS`` /
  ``CDAM_D2.SECOND_STAGE``);
- ``recipe``: its augmentation, schedule and initial weights; ``cli``: ``setup`` and ``main`` of
  ``tools/train_second_stage.py``.
"""
