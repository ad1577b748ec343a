"""The one dispatcher that picks a kernel backend.

``backend`` is one of ``auto | reference | cpu | cuda``:

- ``reference``: the plain-torch loop, the specification; runs anywhere.
- ``cpu``: fused kernel over the whole time loop for CPU tensors (numba).
- ``cuda``: fused CuPy kernels for CUDA tensors (NVRTC at run time).
- ``auto``: the fused path for the tensor's device when it can run; otherwise the reference,
  and the reason is logged once per (kernel, reason).

An explicit backend that cannot run raises :class:`BackendUnavailable` saying why; there is
never a silent fallback. Fused implementations register as ``"module:function"`` strings so
that importing spiking imports neither numba nor cupy.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

import torch

from spiking.kernels import common

BACKENDS = ("auto", "reference", "cpu", "cuda")
log = logging.getLogger("spiking.backend")


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run; the message says why."""


# (kernel name, backend) -> "module:function"; filled by kernel modules at import time.
_FUSED: dict[tuple[str, str], str] = {}
_LOGGED: set[tuple[str, str]] = set()
_AVAIL_CACHE: dict[str, str | None] = {}


_LOADED: dict[tuple[str, str], Callable] = {}  # resolved targets, so dispatch costs no import


def register_fused(kernel: str, backend: str, target: str) -> None:
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"fused backends are 'cpu' and 'cuda', got {backend!r}")
    _FUSED[(kernel, backend)] = target
    _LOADED.pop((kernel, backend), None)


def registered(kernel: str) -> list[str]:
    return [b for (k, b) in _FUSED if k == kernel]


def _runtime_reason(backend: str) -> str | None:
    """Why `backend` cannot run on this machine at all (None when it can)."""
    if backend in _AVAIL_CACHE:
        return _AVAIL_CACHE[backend]
    reason = None
    if backend == "cpu":
        try:
            importlib.import_module("numba")
        except Exception as e:  # noqa: BLE001 - any import failure makes the backend unavailable
            reason = f"numba cannot be imported ({type(e).__name__}: {e}); pip install numba"
    elif backend == "cuda":
        if not torch.cuda.is_available():
            reason = "torch sees no CUDA device (torch.cuda.is_available() is False)"
        else:
            try:
                importlib.import_module("cupy")
            except Exception as e:  # noqa: BLE001
                reason = (f"cupy cannot be imported ({type(e).__name__}: {e}); "
                          "pip install 'spiking[cuda]'")
    _AVAIL_CACHE[backend] = reason
    return reason


def backend_status() -> dict[str, str | None]:
    """For `spiking info`: each backend -> None if it can run here, else the reason."""
    return {"reference": None, "cpu": _runtime_reason("cpu"), "cuda": _runtime_reason("cuda")}


def _why_not(kernel: str, backend: str, x: torch.Tensor,
             unsupported: Callable[[str], str | None] | None) -> str | None:
    if (kernel, backend) not in _FUSED:
        return f"kernel {kernel!r} has no fused {backend!r} implementation"
    want = "cpu" if backend == "cpu" else common.CUDA_DEVICE_TYPE
    if x.device.type != want:
        return f"backend {backend!r} needs {want} tensors, got a tensor on {x.device}"
    reason = _runtime_reason(backend)
    if reason:
        return reason
    if unsupported is not None:
        return unsupported(backend)
    return None


def _load(kernel: str, backend: str) -> Callable:
    key = (kernel, backend)
    fn = _LOADED.get(key)
    if fn is None:
        mod, name = _FUSED[key].split(":")
        fn = getattr(importlib.import_module(mod), name)
        if backend == "cpu":
            fn = with_torch_threads(fn)
        _LOADED[key] = fn
    return fn


def with_torch_threads(fn: Callable) -> Callable:
    """`fn` with numba's thread count matched to torch's before each call (and, at the first
    call of the process, glibc's allocator tuned: ``spiking.kernels.cpu.auto_tune_malloc``)."""
    from spiking.kernels.cpu import auto_tune_malloc, match_torch_threads

    def run(*args, **kwargs):
        auto_tune_malloc()
        match_torch_threads()
        return fn(*args, **kwargs)

    run.__wrapped__ = fn
    return run


def select(kernel: str, backend: str, x: torch.Tensor, reference: Callable,
           unsupported: Callable[[str], str | None] | None = None) -> tuple[str, Callable]:
    """Return (backend name, function) for running `kernel` on `x`.

    `unsupported(backend)` may return a reason why this call's options are beyond the fused
    implementation (e.g. a user-registered surrogate); None when supported.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference", reference
    if backend in ("cpu", "cuda"):
        reason = _why_not(kernel, backend, x, unsupported)
        if reason:
            raise BackendUnavailable(f"{kernel}: backend {backend!r} cannot run: {reason}")
        return backend, _load(kernel, backend)
    # auto
    want = "cuda" if x.device.type == "cuda" else "cpu"
    reason = _why_not(kernel, want, x, unsupported)
    if reason is None:
        return want, _load(kernel, want)
    if (kernel, reason) not in _LOGGED:
        _LOGGED.add((kernel, reason))
        log.info("%s: backend='auto' uses the reference loop because %s", kernel, reason)
    return "reference", reference
