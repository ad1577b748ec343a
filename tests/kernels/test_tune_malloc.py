"""spiking.kernels.cpu.tune_malloc: freed buffers are reused without new page faults."""

import os
import subprocess
import sys
import textwrap

import pytest

from spiking.kernels.cpu import MMAP_THRESHOLD_MAX, tune_malloc

# Allocate and free 4 touched buffers of 8 MB, 10 times; print the minor page faults per round.
# With glibc's defaults the freed 32 MB exceed the trim threshold and go back to the OS, so every
# round faults its pages in again.
PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "tuned":
        from spiking.kernels.cpu import tune_malloc
        assert tune_malloc()
    elif sys.argv[1] == "lif":  # the first fused CPU kernel call tunes, unless switched off
        import torch, spiking
        from spiking.kernels.cpu import auto_tune_malloc
        spiking.LIF(backend="cpu")(torch.rand(3, 2, 5))
        print(auto_tune_malloc())

    def cycle():
        bufs = [np.ones(2**21, np.float32) for _ in range(4)]
        del bufs
    cycle()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10)
""")


def _run(mode: str, **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "SPIKING_TUNE_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env={**clean, **env})
    return out.stdout.split()


def _faults(mode: str) -> float:
    return float(_run(mode)[-1])


def _is_glibc() -> bool:
    import ctypes

    try:
        return sys.platform.startswith("linux") and bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _is_glibc(), reason="tune_malloc sets glibc's mallopt parameters")
def test_tuned_process_reuses_freed_buffers_without_page_faults():
    default, tuned = _faults("default"), _faults("tuned")
    print(f"minor faults per round of 4 x 8 MB: default {default}, tuned {tuned}")
    pages = 4 * 8 * 2**20 / 4096
    assert tuned < 0.02 * pages, f"{tuned} faults per round after tune_malloc()"
    assert default > 10 * max(tuned, 1.0), "the probe no longer shows glibc's trimming"


@pytest.mark.parametrize("kw, match", [({"mmap_threshold": MMAP_THRESHOLD_MAX + 1}, "mmap"),
                                       ({"mmap_threshold": -1}, "mmap"),
                                       ({"trim_threshold": 2**31}, "trim")])
def test_bad_thresholds_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        tune_malloc(**kw)


@pytest.mark.skipif(not _is_glibc(), reason="tune_malloc sets glibc's mallopt parameters")
@pytest.mark.parametrize("env, tuned", [({}, True), ({"SPIKING_TUNE_MALLOC": "0"}, False),
                                        ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, False)])
def test_first_fused_cpu_call_tunes_unless_switched_off(env, tuned):
    """A fresh process is tuned by its first fused CPU kernel call; SPIKING_TUNE_MALLOC=0, or
    glibc thresholds the user chose in the environment, leave the allocator alone."""
    pytest.importorskip("numba")
    said, faults = _run("lif", **env)
    pages = 4 * 8 * 2**20 / 4096
    print(f"{env}: auto_tune_malloc() -> {said}, {faults} faults per round")
    assert said == str(tuned)
    assert (float(faults) < 0.02 * pages) == tuned
