"""Plain-torch layers shared by the methods' backbones (no Detectron2)."""
