"""Fused CPU kernels (numba): one parallel kernel per direction over the whole time loop.

Modules here import numba at import time; the dispatcher imports them lazily (registered as
``"spiking.kernels.cpu.<name>:run"`` strings), so ``import spiking`` never needs numba.
"""

from __future__ import annotations

import sys

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# glibc's upper limit of M_MMAP_THRESHOLD on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX,
# 4 * 1024 * 1024 * sizeof(long), mallopt(3)); mallopt refuses larger values
MMAP_THRESHOLD_MAX = 32 * 2**20


def tune_malloc(trim_threshold: int = 256 * 2**20, mmap_threshold: int = MMAP_THRESHOLD_MAX
                ) -> bool:
    """Keep freed memory in the process instead of handing it back to the OS (glibc only).

    With glibc's defaults, buffers of a few MB (a ``[T, B*N]`` activation) are served from
    fresh pages whenever the allocator has trimmed its heap: every page is faulted in and
    zeroed by the kernel again, ~1,000-3,000 minor faults per call of a ``T=100, B=32,
    N=512`` LIF, which can take longer than the kernel itself (``benchmarks/neurons.py``
    prints faults per call). This sets ``M_MMAP_THRESHOLD`` (allocations below it come from
    the heap) and ``M_TRIM_THRESHOLD`` (free heap kept before returning memory to the OS),
    which also switches off glibc's dynamic adjustment of both; the process keeps up to
    ``trim_threshold`` bytes of freed memory. It is process-wide; not done on import, but
    the first fused CPU kernel call does it (:func:`auto_tune_malloc`) unless switched off.
    The same effect without code: the environment variables ``MALLOC_TRIM_THRESHOLD_`` and
    ``MALLOC_MMAP_THRESHOLD_``, or a caching allocator (jemalloc, tcmalloc) preloaded, as the
    PyTorch and Intel CPU tuning guides advise.
    Returns True when both settings took effect, False where the C library is not glibc.
    """
    if not 0 <= mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be in [0, {MMAP_THRESHOLD_MAX}] bytes (glibc's "
                         f"limit on 64-bit systems), got {mmap_threshold}")
    if not 0 <= trim_threshold < 2**31:
        raise ValueError(f"trim_threshold must be in [0, 2**31) bytes, got {trim_threshold}")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _glibc_mallopt():
    """glibc's ``mallopt`` through ctypes; None on other C libraries and systems."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def match_torch_threads() -> int:
    """Run numba's parallel loops on as many threads as torch uses, and return that number.

    numba sizes its pool from ``NUMBA_NUM_THREADS`` (default: every core) and ignores
    ``OMP_NUM_THREADS`` / ``torch.set_num_threads``; without this, processes that each limit
    torch to one thread (``torchrun`` sets ``OMP_NUM_THREADS=1``, or several training jobs
    side by side) oversubscribe the cores in every fused kernel. ``numba.set_num_threads``
    is per calling thread, so this runs at each fused entry point.

    Launching numba's pool (the first ``numba.get_num_threads`` or parallel kernel of the
    process) sets the OpenMP runtime's thread count, which torch shares, to
    ``NUMBA_NUM_THREADS``: a 1-thread job then found torch, and at its next call numba, on
    every core. torch's count from before the call is put back.
    """
    import numba
    import torch

    t = torch.get_num_threads()
    n = max(1, min(numba.config.NUMBA_NUM_THREADS, t))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    if torch.get_num_threads() != t:
        torch.set_num_threads(t)
    return n


_AUTO = {"done": False, "tuned": False}
# Environment variables with which the user has chosen glibc's thresholds (left alone then).
_USER_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                    "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def auto_tune_malloc() -> bool:
    """:func:`tune_malloc` once per process, at the first fused CPU kernel call, unless
    ``SPIKING_TUNE_MALLOC=0`` or the user set glibc's thresholds through the environment
    (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``, ...), whose
    choice stands. Returns whether this process runs tuned."""
    if not _AUTO["done"]:
        _AUTO["done"] = True
        if why_not_auto_tune() is None:
            _AUTO["tuned"] = tune_malloc()
    return _AUTO["tuned"]


def why_not_auto_tune() -> str | None:
    """Why :func:`auto_tune_malloc` leaves the allocator alone here (None: it tunes)."""
    import os

    if os.environ.get("SPIKING_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no",
                                                                       "off"):
        return "SPIKING_TUNE_MALLOC=0"
    user = [k for k in _USER_MALLOC_ENV if k in os.environ]
    if user:
        return f"{', '.join(user)} set in the environment"
    if _glibc_mallopt() is None:
        return "not glibc"
    return None
