"""Small shared utilities (no Detectron2): atomic, resumable file writing (``files``), unpickling numpy
arrays without running code (``array_pickle``), the usable CPU count (``cores``)."""
