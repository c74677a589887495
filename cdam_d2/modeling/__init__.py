"""Plain torch models (``cdam``, ``clustercam``) and their Detectron2 adapters (``meta_arch``)."""
