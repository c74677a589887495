"""``MODEL.CLUSTERCAM`` keys (owned by the ClusterCAM implementation).

Defaults are the official VOC training and test values; ``configs/*.yaml`` pin the result-changing ones.
"""


def add_config(cfg):
    node = type(cfg)
    cfg.MODEL.CLUSTERCAM = node()
    cc = cfg.MODEL.CLUSTERCAM
    # Network (DeiT-S/16). NUM_CLASSES = K foreground classes = number of class tokens.
    cc.NUM_CLASSES = 20
    cc.EMBED_DIM = 384
    cc.DEPTH = 12
    cc.NUM_HEADS = 6
    cc.MLP_RATIO = 4.0
    cc.PATCH_SIZE = 16
    cc.POS_EMBED_GRID = 14  # stored position grid; the release always builds the model at 224
    cc.CLUSTER_DEPTH = 12  # trailing blocks with the cluster branch
    cc.CLUSTER_CELL = 2  # patches per cluster cell side: M = floor(Hp/2) * floor(Wp/2)
    cc.CLUSTER_ITERS = 3
    cc.CLAMP_ALPHA = False
    cc.CAM_LAST_LAYERS = 3
    cc.DROP_PATH = 0.1
    cc.DECODER_DIM = 512
    cc.DECODER_DILATION = 5
    # DeiT ImageNet weights: timm model name or local file; "" = random init (with a warning).
    # Only loaded when MODEL.WEIGHTS is empty (a ClusterCAM checkpoint replaces them anyway).
    cc.PRETRAINED = "deit_small_patch16_224"

    # Training input (timm's train transform, as released): mapper does the PIL part, the model normalises and erases.
    cc.INPUT = node()
    cc.INPUT.SIZE = 448
    cc.INPUT.CROP_SCALE = (0.08, 1.0)
    cc.INPUT.HFLIP_PROB = 0.5
    cc.INPUT.AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
    # Posterize at magnitude 10 keeps 0 bits, which recent Pillow (13) rejects. "black": the all-black image
    # the release got from Pillow 10.2 (its pinned version); "one_bit": keep 1 bit instead.
    cc.INPUT.POSTERIZE_ZERO_BITS = "black"
    cc.INPUT.INTERPOLATION = "bicubic"
    cc.INPUT.RANDOM_ERASING_PROB = 0.25

    # Pseudo-labels (multi-scale CAMs, AFA's two-threshold background band, PAR) and losses.
    cc.PSEUDO_LABEL = node()
    cc.PSEUDO_LABEL.CAM_SCALES = (1.0, 0.75, 1.25)
    cc.PSEUDO_LABEL.BG_THR = 0.40
    cc.PSEUDO_LABEL.IGNORE_DELTA = 0.10
    # CAMs with DropPath active, as released: probably unintended, but it produced the reported results.
    cc.PSEUDO_LABEL.TRAIN_MODE = True
    cc.PSEUDO_LABEL.PAR_DILATIONS = [1, 2, 4, 8, 12, 24]
    cc.PSEUDO_LABEL.PAR_ITERS = 10
    cc.PSEUDO_LABEL.PAR_W1 = 0.3
    cc.PSEUDO_LABEL.PAR_W2 = 0.01
    cc.LOSS = node()
    cc.LOSS.SEG_WEIGHT = 0.1
    cc.LOSS.SEG_START_ITER = 58750  # skip_seg epochs * iterations per epoch

    # The release's schedule (timm cosine, stepped once per epoch), in iterations. SOLVER.BASE_LR is the peak.
    cc.SOLVER = node()
    cc.SOLVER.EPOCHS = 80
    cc.SOLVER.ITERS_PER_EPOCH = 1175
    cc.SOLVER.WARMUP_EPOCHS = 5
    cc.SOLVER.WARMUP_LR = 1e-6
    cc.SOLVER.MIN_LR = 1e-5
    cc.SOLVER.BETAS = (0.9, 0.999)
    cc.SOLVER.EPS = 1e-8
    cc.SOLVER.WD_ON_POS_CLS = True  # the release decays pos_embed and cls_token: DataParallel hid timm's exemption

    # Inference: decoder only, max over scales of the softmaxes, no flip, then dense CRF.
    cc.TEST = node()
    cc.TEST.SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
    cc.TEST.IMS_PER_BATCH = 8  # test loader batch (images keep their own sizes); lets the CRF pool work
    cc.TEST.CRF = node()
    cc.TEST.CRF.ENABLED = True
    cc.TEST.CRF.NUM_ITERS = 10
    cc.TEST.CRF.GAUSSIAN_SXY = 4.0
    cc.TEST.CRF.GAUSSIAN_COMPAT = 3.0
    cc.TEST.CRF.BILATERAL_SXY = 83.0
    cc.TEST.CRF.BILATERAL_SRGB = 5.0
    cc.TEST.CRF.BILATERAL_COMPAT = 3.0
    # Worker processes of an evaluation; 0 = min(cores of this rank, TEST.IMS_PER_BATCH); 1 = in-process.
    cc.TEST.CRF.NUM_WORKERS = 0
    # In-training evaluation (the final evaluation after training uses SCALES and CRF above).
    cc.TEST.IN_TRAINING = node()
    cc.TEST.IN_TRAINING.START_ITER = -1  # evaluate only after this iteration; -1 = LOSS.SEG_START_ITER
    # Every this many epochs of SOLVER.ITERS_PER_EPOCH (0: never); a positive TEST.EVAL_PERIOD
    # (Detectron2's key, in iterations) replaces it.
    cc.TEST.IN_TRAINING.PERIOD_EPOCHS = 1
    cc.TEST.IN_TRAINING.SCALES = (1.0,)  # the release's in-training protocol: one scale, no CRF
    cc.TEST.IN_TRAINING.CRF = False
    # Each in-training evaluation also scores the pseudo-labels and CAM seeds (at PSEUDO_LABEL.BG_THR) of
    # this many images of DATASETS.TRAIN[0], evenly spread (0: off; needs its label maps), and puts the
    # ClusterCAM panel of its image number PANEL_IMAGE into the event storage (TensorBoard; -1: off).
    cc.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES = 300
    cc.TEST.IN_TRAINING.PANEL_IMAGE = 0
    return cfg
