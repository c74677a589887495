"""Config keys of the plugin: ``add_cdam_config(cfg)`` adds every key of both methods."""
from .cdam_keys import add_cdam_keys
from .clustercam_keys import add_clustercam_keys
from .plugin_keys import add_plugin_keys
from .second_stage_keys import add_second_stage_config

__all__ = ["add_cdam_config", "add_second_stage_config"]


def add_cdam_config(cfg):
    """Add ``MODEL.CDAM``, ``MODEL.CLUSTERCAM`` and ``CDAM_D2`` to a Detectron2 config, in place.

    Idempotent: a config that already has ``CDAM_D2`` is returned unchanged, so projects that
    combine several plugins may call it more than once. Call it before ``merge_from_file``.
    """
    if "CDAM_D2" in cfg:
        return cfg
    add_plugin_keys(cfg)
    add_cdam_keys(cfg)
    add_clustercam_keys(cfg)
    return cfg
