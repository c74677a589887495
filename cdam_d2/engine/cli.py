"""``setup`` and ``main`` of ``tools/train_net.py``, kept in the package so tests and other
projects' scripts can call them (``launch`` needs ``main`` importable in spawned workers)."""
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_cdam_config
from .checkpoint import CoveringCheckpointer
from .trainer import Trainer

logger = logging.getLogger("cdam_d2")


def load_cfg(config_file, opts=(), add_config=add_cdam_config):
    """``get_cfg`` + ``add_config`` (default :func:`add_cdam_config`) + the file + ``opts``, adapted
    to this machine.

    Returns the (unfrozen) config and the list of fallbacks applied (no CUDA -> CPU; AMP off on
    CPU), for the caller to log.
    """
    cfg = get_cfg()
    add_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    fallbacks = []
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        fallbacks.append("CUDA is not available: running on CPU (MODEL.DEVICE cpu)")
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        cfg.SOLVER.AMP.ENABLED = False
        fallbacks.append("AMP needs CUDA: SOLVER.AMP.ENABLED set to False")
    return cfg, fallbacks


def setup(args, add_config=add_cdam_config):
    """Config from ``args.config_file`` + ``args.opts``, adapted to the machine, frozen."""
    cfg, fallbacks = load_cfg(args.config_file, args.opts, add_config)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cdam_d2")
    for message in fallbacks:
        logger.warning(message)
    if cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1:
        # Several CPU processes share the cores; oversubscribed threads slow everything down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_world_size()))
    return cfg


def main(args, setup_cfg=setup, trainer_cls=Trainer):
    """Train, or evaluate with ``--eval-only``. Other entry points (tools/train_second_stage.py) pass
    their own config setup and Trainer subclass."""
    cfg = setup_cfg(args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        checkpointer = CoveringCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        loaded = cfg.MODEL.WEIGHTS or (args.resume and checkpointer.has_checkpoint())
        if not loaded and any(p.requires_grad for p in model.parameters()):
            logger.warning("Evaluating a trainable model without trained weights: MODEL.WEIGHTS is "
                           "empty and no checkpoint was resumed.")
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run_from_command_line(main_fn=main):
    """The command line of tools/train_net.py (Detectron2's default arguments) -> ``launch(main_fn)``;
    ``main_fn`` must be importable by name, as ``launch`` spawns workers that run it."""
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main_fn,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
