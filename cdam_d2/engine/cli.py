"""``setup`` and ``main`` of ``tools/train_net.py``, kept in the package so tests and other
projects' scripts can call them (``launch`` needs ``main`` importable in spawned workers)."""
import logging

import torch
import yaml
from torch import distributed as dist
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_cdam_config
from ..utils.cores import available_cores
from .checkpoint import CoveringCheckpointer
from .trainer import Trainer

logger = logging.getLogger("cdam_d2")


UNSAFE_CONFIG_FLAG = "--allow-unsafe-config"


class UnsafeConfigError(ValueError):
    """A config file with a YAML tag that only unsafe loading (which can run code) understands."""


def add_unsafe_config_flag(parser):
    """Add ``--allow-unsafe-config`` (``args.allow_unsafe_config``) to an ``ArgumentParser``."""
    parser.add_argument(
        UNSAFE_CONFIG_FLAG, action="store_true",
        help="load config files with Python YAML tags (yaml.unsafe_load: the file can run code); "
             "only for files you trust")
    return parser


def argument_parser():
    """Detectron2's ``default_argument_parser`` plus ``--allow-unsafe-config``."""
    return add_unsafe_config_flag(default_argument_parser())


def _merge_config_file(cfg, config_file, allow_unsafe_yaml):
    try:
        cfg.merge_from_file(config_file, allow_unsafe=allow_unsafe_yaml)
    except yaml.constructor.ConstructorError as error:
        # Detectron2 would fall back to yaml.unsafe_load here; the tag may name any callable.
        mark = error.problem_mark
        where = f"{mark.name}:{mark.line + 1}" if mark else config_file
        via = "" if mark is None or mark.name == config_file else f" (a _BASE_ of {config_file})"
        raise UnsafeConfigError(
            f"{where}{via}: {error.problem}. Config files are read as plain data (yaml.safe_load), "
            f"so Python tags such as !!python/object are refused. If you trust this file, pass "
            f"{UNSAFE_CONFIG_FLAG} (load_cfg(..., allow_unsafe_yaml=True)); the file can then run code."
        ) from None


def load_cfg(config_file, opts=(), allow_unsafe_yaml=False, add_config=add_cdam_config):
    """``get_cfg`` + ``add_config`` (default :func:`add_cdam_config`) + the file + ``opts``, adapted
    to this machine.

    The file (and its ``_BASE_`` files) is read with ``yaml.safe_load``; a Python tag raises
    :class:`UnsafeConfigError` naming the file, unless ``allow_unsafe_yaml`` lets Detectron2 fall
    back to ``yaml.unsafe_load``. ``opts`` values are parsed as literals, never run.

    Returns the (unfrozen) config and the list of fallbacks applied (no CUDA -> CPU; AMP off on
    CPU), for the caller to log.
    """
    cfg = get_cfg()
    add_config(cfg)
    _merge_config_file(cfg, config_file, allow_unsafe_yaml)
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
    """Config from ``args.config_file`` + ``args.opts``, adapted to the machine, frozen.
    ``args.allow_unsafe_config`` (see :func:`argument_parser`) is optional."""
    cfg, fallbacks = load_cfg(args.config_file, args.opts,
                              allow_unsafe_yaml=getattr(args, "allow_unsafe_config", False),
                              add_config=add_config)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cdam_d2")
    for message in fallbacks:
        logger.warning(message)
    if cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1:
        # Several CPU processes share the cores; oversubscribed threads slow everything down.
        torch.set_num_threads(available_cores())
    return cfg


def main(args, setup_cfg=setup, trainer_cls=Trainer):
    """Train, or evaluate with ``--eval-only``. Other entry points (a stage whose meta-architecture is
    not the plugin's) pass their own config setup and Trainer subclass."""
    cfg = setup_cfg(args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        checkpointer = CoveringCheckpointer.from_cfg(model, cfg, cfg.OUTPUT_DIR)
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


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT):
    """Detectron2's ``launch`` (same arguments), whose workers also shut their process group down
    after ``main_func``.

    A worker that exits with its gloo group alive can abort at exit ("terminate called without an
    active exception", SIGABRT) after its work is done, failing a finished run; ``main_func`` must
    be importable by name."""
    detectron2_launch(_run_then_release_process_group, num_gpus_per_machine, num_machines=num_machines,
                      machine_rank=machine_rank, dist_url=dist_url, args=(main_func, args), timeout=timeout)


def _run_then_release_process_group(main_func, args):
    result = main_func(*args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()  # no rank tears down while another still communicates
        dist.destroy_process_group()
    return result


def run_from_command_line(main_fn=main):
    """The command line of tools/train_net.py (:func:`argument_parser`) -> ``launch(main_fn)``;
    ``main_fn`` must be importable by name, as ``launch`` spawns workers that run it."""
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main_fn,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
