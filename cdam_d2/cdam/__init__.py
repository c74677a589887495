"""CDAM (ICLR 2025): training-free open-vocabulary semantic segmentation on CLIP.

- ``modeling/``: the algorithm as plain torch modules (no Detectron2);
- ``config``: the ``MODEL.CDAM`` keys; ``resize`` and ``mapper``: the test-time input;
- ``meta_arch``: the ``CDAM`` meta-architecture; ``recipe``: what it brings to the Trainer;
  ``predictor``: ``CDAMPredictor``.
"""
