"""``CDAM_D2`` keys: plugin-level knobs shared by both methods."""


def add_plugin_keys(cfg):
    node = type(cfg)
    cfg.CDAM_D2 = node()
    cfg.CDAM_D2.EVALUATOR = node()
    # "detectron2": classes absent from the ground truth are left out of mIoU (Detectron2's rule).
    # "mmseg": such a class that is predicted counts as IoU 0 (MMSegmentation's rule).
    cfg.CDAM_D2.EVALUATOR.CONVENTION = "detectron2"
    # Raise on a prediction/label size mismatch or an out-of-range label value instead of counting it.
    cfg.CDAM_D2.EVALUATOR.STRICT = True
    cfg.CDAM_D2.EVALUATOR.BOUNDARY_IOU = False
    cfg.CDAM_D2.EVALUATOR.WRITE_PREDICTIONS = False
    # DDP option for models with branches that are idle in some iterations (ClusterCAM's decoder
    # before the segmentation phase starts).
    cfg.CDAM_D2.DDP_FIND_UNUSED_PARAMETERS = False
    # Load weight files that need full pickle (a .pkl or .pth holding Python objects besides
    # tensors and numpy arrays). Full pickle runs any code the file names: only for trusted files.
    cfg.CDAM_D2.ALLOW_PICKLED_WEIGHTS = False
