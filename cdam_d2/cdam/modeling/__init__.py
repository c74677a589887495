"""CDAM as plain torch modules (no detectron2): dense CLIP features, the CDAM attention map, text
embeddings, sliding-window inference, PAMR and post-processing."""
from .cdam_attention import cdam_attention, js_divergence, normalized_affinity, upsample_divergence
from .clip_loader import build_clip, resolve_clip_weights
from .dense_clip import BASE_VARIANTS, BASES, DenseCLIPEncoder
from .pamr import refine_masks
from .segmentor import CDAMSegmentor, SegmentationResult, TextQueries
from .text_bank import TextEmbedder, load_templates
from .vocabulary import Vocabulary, atp_words, parse_vocabulary_string, read_class_names_file

__all__ = [
    "BASE_VARIANTS", "BASES", "CDAMSegmentor", "DenseCLIPEncoder", "SegmentationResult", "TextEmbedder", "TextQueries",
    "Vocabulary", "atp_words", "build_clip", "cdam_attention", "js_divergence", "load_templates",
    "normalized_affinity", "parse_vocabulary_string", "read_class_names_file", "refine_masks",
    "resolve_clip_weights", "upsample_divergence",
]
