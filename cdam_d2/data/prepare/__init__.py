"""Dataset preparation helpers used by ``tools/prepare_*.py``.

Pure python + numpy/PIL/scipy/pycocotools; nothing here imports detectron2, so the tools run before
(or without) a detectron2 install. Every writer is resumable: outputs are written to a temporary
name in the destination folder and moved into place with ``os.replace``, and existing outputs are
skipped on the next run.
"""
