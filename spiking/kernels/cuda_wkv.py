"""Fused WKV on CUDA: loads ``cuda/wkv.cu`` with ``cupy.RawModule`` (NVRTC, no nvcc) and
launches it on torch's current stream, with the compile options of
:mod:`spiking.kernels.nvrtc` (which compile-checks the file on machines without a GPU). The math is documented in :mod:`spiking.kernels.wkv`
(forward) and :mod:`spiking.kernels.cpu.wkv` (backward); the kernels there and here are the
same update, line for line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spiking.kernels import common, nvrtc
from spiking.kernels import wkv as K

SOURCE = Path(__file__).resolve().parent / "cuda" / "wkv.cu"
THREADS = 128  # threads per block; one thread per (batch, channel)
_MODULES: dict[int, object] = {}


def _module(device_index: int):
    if device_index not in _MODULES:
        import cupy

        with cupy.cuda.Device(device_index):
            _MODULES[device_index] = cupy.RawModule(code=SOURCE.read_text(),
                                                    options=nvrtc.OPTIONS)
    return _MODULES[device_index]


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise ValueError(f"cuda WKV runs float32/float64, got {dtype}")


def _launch(name: str, n_bc: int, device: torch.device, *args):
    import cupy

    idx = device.index if device.index is not None else torch.cuda.current_device()
    kern = _module(idx).get_function(name)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    conv = [np.int32(a) if isinstance(a, int) else cupy.from_dlpack(a) for a in args]
    with cupy.cuda.Device(idx):
        kern(((n_bc + THREADS - 1) // THREADS,), (THREADS,), tuple(conv), stream=stream)


class _Impl:
    """Raw forward/backward on contiguous CUDA tensors, used by :class:`wkv.FusedWKV`."""

    @staticmethod
    def forward(w, u, k, v, a0, b0, p0):
        t, b, c = k.shape
        sfx = _suffix(k.dtype)
        y, sa, sb, sp = (torch.empty_like(k) for _ in range(4))
        af, bf, pf = (torch.empty_like(a0) for _ in range(3))
        if t > 0 and b * c > 0:
            _launch(f"wkv_forward_{sfx}", b * c, k.device, t, b * c, c, w, u, k, v, a0, b0, p0,
                    y, sa, sb, sp, af, bf, pf)
        else:
            af.copy_(a0), bf.copy_(b0), pf.copy_(p0)
        return y, sa, sb, sp, (af, bf, pf)

    @staticmethod
    def backward(w, u, k, v, y, sa, sb, sp, gy):
        t, b, c = k.shape
        gk, gv = torch.empty_like(k), torch.empty_like(k)
        gw, gu = k.new_zeros(b, c), k.new_zeros(b, c)
        if t > 0 and b * c > 0:
            _launch(f"wkv_backward_{_suffix(k.dtype)}", b * c, k.device, t, b * c, c, w, u, k,
                    v, y, sa, sb, sp, gy, gk, gv, gw, gu)
        return gw.sum(0), gu.sum(0), gk, gv


def run(w, u, k, v, state: K.WKVState):
    """Fused CUDA WKV; same signature and results as :func:`spiking.kernels.wkv.reference`."""
    if not common.on_cuda(k):
        raise ValueError(f"cuda WKV needs CUDA tensors, got {k.device}")
    dt = k.dtype
    w, u = w.to(dt), u.to(dt)
    state = K.WKVState(*(s.to(dt) for s in state))
    return K.fused_apply(_Impl, w, u, k, v, state)
