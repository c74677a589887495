"""Dataset layouts, readers, label I/O and toy data (no detectron2 needed at import)."""
