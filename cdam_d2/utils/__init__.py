"""Small shared utilities (no Detectron2): atomic, resumable file writing."""
