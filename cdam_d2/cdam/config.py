"""``MODEL.CDAM`` keys (owned by the CDAM implementation). Defaults reproduce the released method."""


def add_config(cfg):
    """Add ``cfg.MODEL.CDAM`` with typed defaults, in place."""
    node = type(cfg)
    cfg.MODEL.CDAM = node()
    cdam = cfg.MODEL.CDAM
    # CLIP: an open_clip model name (or "tiny:<name>" for tests) and its weights: an open_clip pretrained tag,
    # a local checkpoint file (OpenAI .pt or open_clip state dict), or "random" (seeded by SEED).
    cdam.CLIP_MODEL = "ViT-B-16"
    cdam.CLIP_WEIGHTS = "openai"
    # Use QuickGELU even when it cannot be detected (open_clip state-dict files of OpenAI weights).
    cdam.FORCE_QUICK_GELU = False
    cdam.SEED = 0
    # Backbone autocast dtype on CUDA: "fp16" (released precision; text too), "bf16" or "fp32".
    cdam.PRECISION = "fp16"
    # On CPU: "fp32" (released) or "bf16" (CPUs with AVX512-BF16 or AMX: a backbone ~1.7x as fast, labels
    # 99.6-99.9% equal to fp32 in bench_cdam.py). The CDAM map, and text under bf16, are fp32 on every device.
    cdam.CPU_PRECISION = "fp32"

    # First-pass base variant: maskclip (released) | sclip | clearclip | gem | naclip | clip (vanilla) |
    # sc_clip | resclip (2025 bases that read earlier blocks too; docs/BASES_2025.md).
    cdam.BASE = "maskclip"
    cdam.GEM_DEPTH = 6  # last blocks on GEM's parallel path (GEM's gem_depth=7 of 12 blocks)
    cdam.NACLIP_SIGMA = 5.0  # also ResCLIP's gaussian_std (neighbourhood bias and SFR blur)
    # First-pass last block: "auto" (the base's release: clearclip and naclip reduced; clip, maskclip, sclip
    # and gem full; sc_clip and resclip run their own last block, without residual and FFN, and take only
    # "auto", under which resclip's SECOND_PASS "base" is reduced), "full" (residual around the attention, and
    # the FFN; GEM's path has none) or "reduced" (the attention output alone: ClearCLIP's ignore_residual=True,
    # NACLIP's arch="reduced"; for gem the path's last block alone).
    cdam.LAST_BLOCK = "auto"
    # Position-embedding resampling for windows off the trained grid: "auto" (the base's release: gem
    # "size_antialias", the others "scale_factor"), "scale_factor" (bicubic with the "+0.1" scale factors of
    # SCLIP/CDAM/ClearCLIP/NACLIP) or "size_antialias" (bicubic to the grid size with antialias, GEM's).
    cdam.POS_EMBED_RESAMPLING = "auto"
    # SC-CLIP (BASE "sc_clip"); layers are 0-based blocks before the last (its release's ViT-B/16 values).
    cdam.SC_CLIP = node()
    cdam.SC_CLIP.PRE_ADJUST_LAYER = 8
    cdam.SC_CLIP.POST_ADJUST_LAYER = 3
    cdam.SC_CLIP.MULTI_LEVEL_LAYERS = (3, 10)  # [start, end)
    cdam.SC_CLIP.CLS_WEIGHT = 0.3
    # ResCLIP (BASE "resclip"); defaults: its release's VOC21 config. Its first segmentation uses LOGIT_SCALE.
    cdam.RESCLIP = node()
    cdam.RESCLIP.RCS_LAYERS = (5, 9)  # [start, end), 0-based
    cdam.RESCLIP.RCS_WEIGHTS = (2.0, 0.3)  # (tau, lambda)
    cdam.RESCLIP.SFR_WEIGHTS = (2.2, 0.7)  # (tau, lambda)
    cdam.RESCLIP.SFR_THRESHOLD = 0.5  # temp_thd
    cdam.RESCLIP.SFR_PAMR_STEPS = 10
    cdam.RESCLIP.SFR_PAMR_DILATIONS = (8, 16)
    cdam.RESCLIP.SAME_ENTITY_DECAY = True  # delete_same_entity
    # False: the base method alone (baseline rows of the paper's table).
    cdam.USE_CDAM = True
    # "released": every base re-runs the last block with residual + FFN; "base": keep the base's block structure.
    cdam.SECOND_PASS = "released"

    # Text side. CLASS_NAMES_FILE overrides the dataset's metadata `class_names_file` when not empty.
    cdam.CLASS_NAMES_FILE = ""
    cdam.USE_ATP = True
    cdam.ATP_FILE = "atp_words.txt"
    cdam.TEMPLATES = "openai_imagenet"  # or a file with one "{}" template per line
    cdam.TEXT_CACHE_DIR = "~/.cache/cdam_d2/text"  # "" disables the on-disk text-embedding cache

    # CDAM map: affinities from the Jensen-Shannon divergence of patch class distributions, at full and reduced
    # resolution.
    cdam.TEMPERATURE = 0.1  # T of the class distributions
    cdam.SHARPEN_TEMPERATURE = 0.1  # P of the row softmax
    cdam.SCALES = (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)
    cdam.ROW_NORMALIZE = False  # ablation only; the release does not normalize rows
    # Pair x class terms per JS chunk (bounds the extra memory: 2 buffers of 4 bytes each); 0 = by device
    # (CPU 2**20, CUDA 2**26).
    cdam.JS_CHUNK_ELEMENTS = 0

    # Prediction and background. Pixels whose best class probability is below the image's threshold
    # get class 0. BACKGROUND_RULE: "entropy" (CDAM: thr = ALPHA * THR_DEFAULT / H_center of the patch
    # entropies at ENTROPY_SCALE, from THRESHOLD_SOURCE), "fixed" (thr = BACKGROUND_THRESHOLD: the peers'
    # prob_thd) or "none".
    cdam.LOGIT_SCALE = 50.0
    cdam.BACKGROUND_RULE = "entropy"
    cdam.ENTROPY_SCALE = 50.0
    cdam.ALPHA = 2.5  # 0 disables the entropy threshold
    cdam.THR_DEFAULT = 0.5
    cdam.THRESHOLD_SOURCE = "last_window"  # released; or "image"
    cdam.BACKGROUND_THRESHOLD = 0.0
    # SCLIP's area rule (its area_thd), before the background rule: a class >= 1 whose predicted area is not
    # above AREA_THRESHOLD x the area predicted as classes >= 1 gets probability 0, and pixels are argmaxed
    # again. 0 = off.
    cdam.AREA_THRESHOLD = 0.0
    # PAMR of the merged logits at the output size, guided by the image: off as released (and in
    # SCLIP's defaults; the paper does not use it); NACLIP runs 10 steps with dilations (8, 16).
    cdam.PAMR_STEPS = 0
    cdam.PAMR_DILATIONS = (8, 16)

    # Sliding windows on the resized image (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST give the resize); SLIDE_CROP 0:
    # the whole image as one window (the peers' slide_crop=0).
    cdam.SLIDE_CROP = 448
    cdam.SLIDE_STRIDE = 224
    # True: zero-pad each window to multiples of the patch size (ClearCLIP); False: the patch convolution
    # drops the remainder (released).
    cdam.PAD_WINDOWS = False
    cdam.WINDOW_BATCH = 0  # windows per forward; 0 = all windows of an image in one batch
