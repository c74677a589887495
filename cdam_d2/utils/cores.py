"""How many CPU cores this process may use."""
import os

__all__ = ["available_cores"]


def available_cores():
    """The cores this process may run on (its CPU affinity where the system has one), shared among the
    processes of a distributed run (torch.distributed's world size, when initialised); at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    world_size = 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
    except ImportError:
        pass
    return max(1, cores // world_size)
