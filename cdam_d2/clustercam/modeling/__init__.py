"""ClusterCAM (Kim & Kim, IEEE Access 2024) as plain torch modules; no Detectron2 import here."""
from .blocks import ClusterAttention, ClusterBlock, soft_kmeans
from .crf import CRFParams, CRFWorkerError, CRFWorkerPool, DenseCRFPostProcessor, dense_crf
from .inference import multiscale_segmentation_probs
from .losses import balanced_segmentation_loss, classification_loss
from .network import ClusterCAMNet, LargeFOV, interpolate_patch_pos_embed
from .par import PAR
from .pseudo_labels import (
    IGNORE_LABEL,
    cams_to_labels,
    denormalize_to_unit,
    multiscale_cams,
    normalize_cams,
    refine_with_background_band,
)
from .pretrained import (
    PRETRAINED_KEY,
    convert_official_checkpoint,
    deit_to_clustercam,
    load_deit_state_dict,
    load_deit_weights,
)

__all__ = [k for k in globals() if not k.startswith("_")]
