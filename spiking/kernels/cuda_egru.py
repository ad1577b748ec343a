"""Fused EGRU on CUDA: ``cuda/egru.cu`` loaded with ``cupy.RawModule`` (NVRTC, no nvcc), launched
on torch's current stream. The math is :mod:`spiking.kernels.egru` (forward) and
:mod:`spiking.kernels.cpu.egru` (backward); one block per sample, threads over units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spiking.kernels import common
from spiking.kernels.egru import EGRUState, surrogate_consts

SOURCE = Path(__file__).resolve().parent / "cuda" / "egru.cu"
THREADS = 256  # per block (a multiple of the warp size: the backward reduces per warp)
_MODULES: dict[int, object] = {}
CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests


def _module(idx: int):
    if idx not in _MODULES:
        import cupy

        with cupy.cuda.Device(idx):
            _MODULES[idx] = cupy.RawModule(code=SOURCE.read_text(),
                                           options=("--std=c++17", "--fmad=false"))
    return _MODULES[idx]


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise ValueError(f"cuda EGRU runs float32/float64, got {dtype}")


def _launch(name: str, blocks: int, device: torch.device, *args):
    import cupy

    idx = device.index if device.index is not None else torch.cuda.current_device()
    kern = _module(idx).get_function(name)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            conv.append(cupy.from_dlpack(a.contiguous()))
        elif isinstance(a, int):
            conv.append(np.int32(a))
        else:  # a float scalar of the compute dtype
            conv.append(a)
    with cupy.cuda.Device(idx):
        kern((blocks,), (THREADS,), tuple(conv), stream=stream)


class _EGRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wx, weight_hh, thr, c0, y0, sid, k1, k2, damp):
        t, b, h3 = wx.shape
        h = h3 // 3
        dt = wx.dtype
        wx = wx.detach().contiguous()
        rt = weight_hh.detach().to(dt).t().contiguous()
        thr_c = thr.detach().to(dt).contiguous()
        c0c, y0c = c0.detach().to(dt).contiguous(), y0.detach().to(dt).contiguous()
        y_out = torch.full((t, b, h), float("nan"), dtype=dt, device=wx.device)
        c_out = torch.full_like(y_out, float("nan"))
        u_out, r_out, z_out = (torch.empty_like(y_out) for _ in range(3))
        scratch = torch.empty(b, 2 * h, dtype=dt, device=wx.device)
        _launch(f"egru_forward_{_suffix(dt)}", b, wx.device, t, b, h, wx, rt, thr_c, c0c, y0c,
                y_out, c_out, u_out, r_out, z_out, scratch)
        CALLS["fwd"] += 1
        ctx.save_for_backward(rt, thr_c, c0c, y0c, c_out, y_out, u_out, r_out, z_out)
        ctx.cfg = (sid, k1, k2, damp, weight_hh.dtype, thr.dtype)
        return y_out, c_out

    @staticmethod
    def backward(ctx, gy, gc):
        rt, thr, c0, y0, c_st, y_st, u_st, r_st, z_st = ctx.saved_tensors
        sid, k1, k2, damp, w_dtype, thr_dtype = ctx.cfg
        dt = c_st.dtype
        gy = torch.zeros_like(y_st) if gy is None else gy.to(dt).contiguous()
        gc = torch.zeros_like(c_st) if gc is None else gc.to(dt).contiguous()
        t, b, h = y_st.shape
        dev = c_st.device
        dwx = torch.empty(t, b, 3 * h, dtype=dt, device=dev)
        drt = torch.zeros(h, 3 * h, dtype=dt, device=dev)
        dthr = torch.zeros(h, dtype=dt, device=dev)
        dc0, dy0 = torch.empty(b, h, dtype=dt, device=dev), torch.empty(b, h, dtype=dt, device=dev)
        scratch = torch.empty(b, 10 * h, dtype=dt, device=dev)
        rw = rt.t().contiguous()
        cast = np.float32 if dt == torch.float32 else np.float64
        _launch(f"egru_backward_{_suffix(dt)}", b, dev, t, b, h, gy, gc, rt, rw, thr, c0, y0,
                c_st, y_st, u_st, r_st, z_st, int(sid), cast(k1), cast(k2), cast(damp), dwx, drt,
                dthr, dc0, dy0, scratch)
        CALLS["bwd"] += 1
        return dwx, drt.t().to(w_dtype), dthr.to(thr_dtype), dc0, dy0, None, None, None, None


def run(wx, state, p, record=False):
    """Fused CUDA run; same signature and returns as :func:`spiking.kernels.egru.reference`."""
    if not common.on_cuda(wx):
        raise ValueError(f"cuda EGRU needs CUDA tensors, got {wx.device}")
    if wx.shape[0] == 0 or wx.shape[1] == 0:
        from spiking.kernels.egru import reference
        return reference(wx, state, p, record)
    sid = int(p.surrogate.kernel_id)
    k1, k2 = surrogate_consts(sid, float(p.surrogate.alpha))
    y, c = _EGRUFunction.apply(wx, p.weight_hh, p.threshold, state.c, state.y, sid, k1, k2,
                               float(p.dampening))
    final = EGRUState(c[-1], y[-1])
    return (y, final, EGRUState(c, y)) if record else (y, final)
