"""``MODEL.CLUSTERCAM`` keys (owned by the ClusterCAM implementation)."""


def add_clustercam_keys(cfg):
    node = type(cfg)
    cfg.MODEL.CLUSTERCAM = node()
