"""Fused CPU kernels (numba): one parallel kernel per direction over the whole time loop.

Modules here import numba at import time; the dispatcher imports them lazily (registered as
``"spiking.kernels.cpu.<name>:run"`` strings), so ``import spiking`` never needs numba.
"""


def match_torch_threads() -> int:
    """Run numba's parallel loops on as many threads as torch uses, and return that number.

    numba sizes its pool from ``NUMBA_NUM_THREADS`` (default: every core) and ignores
    ``OMP_NUM_THREADS`` / ``torch.set_num_threads``; without this, processes that each limit
    torch to one thread (``torchrun`` sets ``OMP_NUM_THREADS=1``, or several training jobs
    side by side) oversubscribe the cores in every fused kernel. ``numba.set_num_threads``
    is per calling thread, so this runs at each fused entry point.
    """
    import numba
    import torch

    n = max(1, min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads()))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n
