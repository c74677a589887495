"""``MODEL.CDAM`` keys (owned by the CDAM implementation)."""


def add_cdam_keys(cfg):
    node = type(cfg)
    cfg.MODEL.CDAM = node()
