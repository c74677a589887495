"""ClusterCAM (IEEE Access 2024): weakly supervised semantic segmentation from image-level labels.

- ``modeling/``: the network, pseudo-labels, losses, PAR, dense CRF and DeiT weights as plain torch
  (no Detectron2);
- ``config``: the ``MODEL.CLUSTERCAM`` keys; ``augmentation`` and ``mapper``: the training input;
- ``meta_arch``: the ``ClusterCAM`` meta-architecture; ``recipe``: its loaders, ``solver`` /
  ``schedule``, ``hooks`` and evaluation context; ``predictor``: ``ClusterCAMPredictor``.
"""
