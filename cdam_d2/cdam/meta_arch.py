"""Detectron2 adapter of the training-free CDAM segmentor (``cdam_d2.cdam.modeling``)."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..data.datasets.class_names import class_names_file_for
from .modeling import CDAMSegmentor, DenseCLIPEncoder, TextEmbedder, TextQueries, build_clip, load_templates
from .modeling.dense_clip import MULTI_LAYER_BASES, check_encoder_options
from .modeling.full_size import full_size_predictions
from .modeling.segmentor import check_segmentor_options
from .modeling.vocabulary import Vocabulary, parse_class_lines, read_class_names_file
from .recipe import TRAINING_FREE, CDAMRecipe

logger = logging.getLogger(__name__)

# MODEL.CDAM.PRECISION (CUDA) and CPU_PRECISION -> backbone autocast dtype (None: fp32, no autocast).
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
CPU_PRECISIONS = ("fp32", "bf16")  # fp16 matmuls are not accelerated on CPUs


def multi_layer_base_options(options) -> Dict:
    """Keyword arguments of the SC-CLIP / ResCLIP base classes from ``MODEL.CDAM`` ({} for other bases)."""
    if options.BASE == "sc_clip":
        sc_clip = options.SC_CLIP
        return {"pre_adjust_layer": sc_clip.PRE_ADJUST_LAYER, "post_adjust_layer": sc_clip.POST_ADJUST_LAYER,
                "multi_level_layers": tuple(sc_clip.MULTI_LEVEL_LAYERS), "cls_weight": sc_clip.CLS_WEIGHT}
    if options.BASE == "resclip":
        resclip = options.RESCLIP
        return {"logit_scale": options.LOGIT_SCALE, "rcs_layers": tuple(resclip.RCS_LAYERS),
                "rcs_weights": tuple(resclip.RCS_WEIGHTS), "sfr_weights": tuple(resclip.SFR_WEIGHTS),
                "sfr_threshold": resclip.SFR_THRESHOLD, "sfr_pamr_steps": resclip.SFR_PAMR_STEPS,
                "sfr_pamr_dilations": tuple(resclip.SFR_PAMR_DILATIONS),
                "same_entity_decay": resclip.SAME_ENTITY_DECAY}
    return {}


def validate_options(cfg) -> None:
    """Check the ``MODEL.CDAM`` choices and thresholds before any weights load (building CLIP may download
    them): a ValueError names the key, its value and what is allowed. Warns about a BACKGROUND_THRESHOLD that
    has no effect (BACKGROUND_RULE not "fixed") and about bf16 on a CPU without bf16 matrix products. The
    SC_CLIP / RESCLIP keys are checked when BASE selects that base; their layers' upper bounds need the tower
    and are checked when the encoder is built."""
    options = cfg.MODEL.CDAM
    check_encoder_options(options.BASE, options.LAST_BLOCK, options.POS_EMBED_RESAMPLING)
    if options.BASE in MULTI_LAYER_BASES:  # its constructor checks the keys; None: depth not known yet
        MULTI_LAYER_BASES[options.BASE](None, **multi_layer_base_options(options))
    check_segmentor_options(options.SECOND_PASS, options.THRESHOLD_SOURCE, options.BACKGROUND_RULE,
                            options.BACKGROUND_THRESHOLD, options.AREA_THRESHOLD, options.SLIDE_CROP,
                            options.SLIDE_STRIDE)
    if options.BACKGROUND_THRESHOLD != 0 and options.BACKGROUND_RULE != "fixed":
        logger.warning("MODEL.CDAM.BACKGROUND_THRESHOLD %s has no effect: it is the threshold of BACKGROUND_RULE "
                       "'fixed', and BACKGROUND_RULE is %r", options.BACKGROUND_THRESHOLD, options.BACKGROUND_RULE)
    if options.PRECISION not in AUTOCAST_DTYPES:
        raise ValueError(f"MODEL.CDAM.PRECISION {options.PRECISION!r} is not one of {sorted(AUTOCAST_DTYPES)}")
    if options.CPU_PRECISION not in CPU_PRECISIONS:
        raise ValueError(f"MODEL.CDAM.CPU_PRECISION {options.CPU_PRECISION!r} is not one of {CPU_PRECISIONS}")
    if (options.CPU_PRECISION == "bf16" and cfg.MODEL.DEVICE == "cpu"
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        logger.warning("MODEL.CDAM.CPU_PRECISION bf16: this CPU has no native bf16 matrix products "
                       "(AVX512-BF16 or AMX), so bf16 runs slower than fp32 here; set it to fp32")
    if cfg.INPUT.FORMAT != "RGB":
        raise ValueError(f"CDAM expects INPUT.FORMAT 'RGB' (CLIP statistics), got {cfg.INPUT.FORMAT!r}")


@META_ARCH_REGISTRY.register()
class CDAM(nn.Module):
    """CDAM (ICLR 2025) on an open_clip ViT: evaluation only.

    Input records: ``image`` (uint8 CHW RGB, resized by ``CDAMTestMapper``), ``height``/``width`` (original
    size), ``meta`` = {"dataset_name": name}. Output: ``[{"sem_seg": Tensor[C, height, width]}]`` whose argmax
    is the final prediction (area and background rules included).

    The vocabulary of a dataset is its class-name file (``class_names_file_for``: metadata
    ``class_names_file`` or the file shipped for a Detectron2 builtin dataset), else its ``stuff_classes``
    (", " inside a class separates synonyms, as in Detectron2's ADE20K names). Text embeddings are kept per
    name in memory, so a new vocabulary encodes only the names not seen before.
    """

    recipe = CDAMRecipe

    @configurable
    def __init__(self, *, segmentor: CDAMSegmentor, clip_model: nn.Module, text_embedder: TextEmbedder,
                 pixel_mean, pixel_std, class_names_file: str = "", default_dataset: str = "",
                 atp_vocabulary: Optional[Vocabulary] = None,
                 text_autocast_dtypes: Optional[Dict[str, Optional[torch.dtype]]] = None):
        """
        Args:
            segmentor: plain-torch CDAM segmentor (its encoder holds the CLIP vision tower).
            clip_model: open_clip CLIP model; only its text side is kept (used through ``text_embedder``): its
                ``visual`` is set to None, so that every weight appears once in ``state_dict()``.
            text_embedder: cached prompt-ensemble text encoder.
            pixel_mean, pixel_std: per-channel normalization on the 0-255 scale (RGB).
            class_names_file: name file used for every dataset when not empty (else dataset metadata).
            default_dataset: dataset of records without ``meta`` (DATASETS.TEST when it names exactly one;
                "" makes such records an error, so several test datasets never share a vocabulary by accident).
            atp_vocabulary: augmented text prompts appended to the class distributions (None = no ATP).
            text_autocast_dtypes: autocast dtype of text encoding per device type (not listed: fp32).
        """
        super().__init__()
        clip_model.visual = None  # held by the segmentor's encoder: a Detectron2 checkpoint loads back strictly
        self.segmentor = segmentor.requires_grad_(False)
        self.clip_model = clip_model.requires_grad_(False)
        self.text_embedder = text_embedder
        self.class_names_file = class_names_file
        self.default_dataset = default_dataset
        self.atp_vocabulary = atp_vocabulary
        self.text_autocast_dtypes = dict(text_autocast_dtypes or {})
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._queries_by_dataset: Dict[str, TextQueries] = {}
        self._embedding_by_name: Dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg):
        validate_options(cfg)
        options = cfg.MODEL.CDAM
        clip_model, tokenizer, identity = build_clip(options.CLIP_MODEL, options.CLIP_WEIGHTS,
                                                     options.FORCE_QUICK_GELU, options.SEED)
        autocast_dtypes = {"cuda": AUTOCAST_DTYPES[options.PRECISION], "cpu": AUTOCAST_DTYPES[options.CPU_PRECISION]}
        encoder = DenseCLIPEncoder(clip_model.visual, options.BASE, options.GEM_DEPTH, options.NACLIP_SIGMA,
                                   options.LAST_BLOCK, options.POS_EMBED_RESAMPLING, multi_layer_base_options(options))
        segmentor = CDAMSegmentor(
            encoder, use_cdam=options.USE_CDAM, second_pass=options.SECOND_PASS, temperature=options.TEMPERATURE,
            sharpen_temperature=options.SHARPEN_TEMPERATURE, scales=options.SCALES,
            row_normalize=options.ROW_NORMALIZE, logit_scale=options.LOGIT_SCALE,
            entropy_scale=options.ENTROPY_SCALE, alpha=options.ALPHA, threshold_default=options.THR_DEFAULT,
            threshold_source=options.THRESHOLD_SOURCE, crop=options.SLIDE_CROP, stride=options.SLIDE_STRIDE,
            window_batch=options.WINDOW_BATCH, chunk_elements=options.JS_CHUNK_ELEMENTS,
            autocast_dtypes=autocast_dtypes, pamr_steps=options.PAMR_STEPS, pamr_dilations=options.PAMR_DILATIONS,
            background_rule=options.BACKGROUND_RULE, fixed_threshold=options.BACKGROUND_THRESHOLD,
            area_threshold=options.AREA_THRESHOLD, pad_windows=options.PAD_WINDOWS)
        text_embedder = TextEmbedder(clip_model, tokenizer, identity,
                                     load_templates(options.TEMPLATES), options.TEXT_CACHE_DIR)
        use_atp = options.USE_ATP and options.USE_CDAM
        return {
            "segmentor": segmentor,
            "clip_model": clip_model,
            "text_embedder": text_embedder,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "class_names_file": options.CLASS_NAMES_FILE,
            "default_dataset": cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) == 1 else "",
            "atp_vocabulary": read_class_names_file(options.ATP_FILE) if use_atp else None,
            # Text in fp16 where the backbone is (as released), else fp32: it is encoded once and cached,
            # and bf16's 8-bit mantissa moves the embeddings more than the whole bf16 backbone moves labels.
            "text_autocast_dtypes": {device: dtype for device, dtype in autocast_dtypes.items()
                                     if dtype == torch.float16},
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def embed_names(self, names: Sequence[str]) -> torch.Tensor:
        """(Q,) names -> (Q, E) unit-norm prompt-ensemble embeddings on the model's device. Only names not
        embedded before by this model are encoded (through the text embedder and its disk cache)."""
        missing = [name for name in dict.fromkeys(names) if name not in self._embedding_by_name]
        if missing:
            autocast = self.text_autocast_dtypes.get(self.device.type)
            self._embedding_by_name.update(zip(missing, self.text_embedder(missing, autocast).cpu()))
        return torch.stack([self._embedding_by_name[name] for name in names]).to(self.device)

    def text_queries(self, vocabulary: Vocabulary) -> TextQueries:
        """Embed a vocabulary (and the ATP words) with the prompt ensemble."""
        dataset = self.embed_names(vocabulary.queries)
        if self.atp_vocabulary is None:
            extra = dataset.new_zeros(0, dataset.shape[1])
        else:
            extra = self.embed_names(self.atp_vocabulary.queries)
        return TextQueries(dataset, extra, vocabulary.query_to_class, vocabulary.num_classes)

    def dataset_vocabulary(self, dataset_name: str) -> Vocabulary:
        """The vocabulary of a registered dataset: MODEL.CDAM.CLASS_NAMES_FILE, else the dataset's class-name
        file, else its ``stuff_classes``."""
        metadata = MetadataCatalog.get(dataset_name)
        classes = metadata.get("stuff_classes", None)
        names_file = self.class_names_file or class_names_file_for(dataset_name)
        if names_file:
            vocabulary = read_class_names_file(names_file)
            if classes is not None and len(classes) != vocabulary.num_classes:
                raise ValueError(f"{names_file!r} lists {vocabulary.num_classes} classes but dataset "
                                 f"{dataset_name!r} has {len(classes)} stuff_classes")
            return vocabulary
        if not classes:
            raise ValueError(f"Dataset {dataset_name!r} has neither a class-name file nor `stuff_classes` "
                             "metadata; set MODEL.CDAM.CLASS_NAMES_FILE to a name file (one class per line)")
        return parse_class_lines(classes, source=f"stuff_classes of dataset {dataset_name!r}")

    def dataset_queries(self, dataset_name: str) -> TextQueries:
        """Text queries of a registered dataset's vocabulary, cached per dataset."""
        queries = self._queries_by_dataset.get(dataset_name)
        if queries is None or queries.dataset.device != self.device:
            vocabulary = self.dataset_vocabulary(dataset_name)
            logger.info("CDAM text queries of %s: %d names for %d classes + %d ATP words", dataset_name,
                        len(vocabulary.queries), vocabulary.num_classes,
                        len(self.atp_vocabulary.queries) if self.atp_vocabulary is not None else 0)
            queries = self._queries_by_dataset[dataset_name] = self.text_queries(vocabulary)
        return queries

    def encode_datasets(self, dataset_names: Sequence[str]) -> None:
        """Encode the text queries of ``dataset_names`` now. Under ``launch`` the main process encodes first
        (and fills the disk text cache); the other processes wait, then read the cache."""
        def encode_all():
            for name in dataset_names:
                self.dataset_queries(name)

        if comm.is_main_process():
            encode_all()
        comm.synchronize()
        if not comm.is_main_process():
            encode_all()

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> normalized float on the model's device."""
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def segment(self, image: torch.Tensor, height: int, width: int, queries: TextQueries) -> torch.Tensor:
        """(3, H1, W1) uint8 RGB image -> (C, height, width) scores."""
        return self.segmentor(self.normalize(image), (height, width), queries).scores

    @torch.no_grad()
    def segment_full_size(self, image: torch.Tensor, height: int, width: int, queries: TextQueries,
                          with_probabilities: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Like :meth:`segment`, with bounded memory for large photos (``full_size_predictions``):
        (3, H1, W1) uint8 RGB image -> labels (height, width) int32 and class probabilities
        (C, height, width) float32 (or None), both on the CPU."""
        normalized = self.normalize(image)
        merged, threshold = self.segmentor.merged_logits(normalized, queries)
        if self.segmentor.pamr_steps > 0:  # PAMR refines the whole full-size map at once
            result = self.segmentor.postprocess(merged, threshold, normalized, (height, width), queries)
            labels = result.scores.argmax(dim=0).int().cpu()
            return labels, result.probabilities.float().cpu() if with_probabilities else None
        return full_size_predictions(merged, (height, width), queries.query_to_class, queries.num_classes,
                                     self.segmentor.logit_scale, threshold, with_probabilities,
                                     area_threshold=self.segmentor.area_threshold)

    def forward(self, batched_inputs: List[dict]) -> List[Dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError(TRAINING_FREE + " (call model.eval() before running the model)")
        outputs = []
        for record in batched_inputs:
            dataset_name = record.get("meta", {}).get("dataset_name") or self.default_dataset
            if not dataset_name:
                raise ValueError(
                    f"Input record {record.get('file_name', '')!r} has no meta['dataset_name'] and DATASETS.TEST "
                    "does not name exactly one dataset, so CDAM cannot choose its vocabulary. Map records with "
                    "CDAMTestMapper(cfg, dataset_name=...) (the Trainer's test loader does) or set record['meta'].")
            image = record["image"]
            height, width = record.get("height", image.shape[-2]), record.get("width", image.shape[-1])
            outputs.append({"sem_seg": self.segment(image, height, width, self.dataset_queries(dataset_name))})
        return outputs
