"""Fused LSM reservoir on CUDA: ``cuda/lsm.cu`` loaded with ``cupy.RawModule`` (NVRTC), launched
on torch's current stream; the update is :mod:`spiking.kernels.lsm`. One block per sample, one
warp per spiking neuron for its fan-out (event-driven), threads over neurons for the update.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spiking.kernels import common
from spiking.kernels.lsm import LSMState

SOURCE = Path(__file__).resolve().parent / "cuda" / "lsm.cu"
THREADS = 256
_MODULES: dict[int, object] = {}
CALLS = {"fwd": 0}


def _module(idx: int):
    if idx not in _MODULES:
        import cupy

        with cupy.cuda.Device(idx):
            _MODULES[idx] = cupy.RawModule(code=SOURCE.read_text(),
                                           options=("--std=c++17", "--fmad=false"))
    return _MODULES[idx]


def run(x, state, p, record=False):
    """Fused CUDA run; same signature and returns as :func:`spiking.kernels.lsm.reference`."""
    import cupy

    if not common.on_cuda(x):
        raise ValueError(f"cuda LSM needs CUDA tensors, got {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cuda LSM runs float32/float64, got {x.dtype}")
    t, b, n = x.shape
    dt, dev = x.dtype, x.device
    x = x.detach().contiguous()
    s_out = torch.full((t, b, n), float("nan"), dtype=dt, device=dev)
    v_out = torch.full((t, b, n) if record else (1,), float("nan"), dtype=dt, device=dev)
    v_fin, i_fin = torch.empty(b, n, dtype=dt, device=dev), torch.empty(b, n, dtype=dt, device=dev)
    r_fin = torch.empty(b, n, dtype=torch.int64, device=dev)

    def vec(v, kind=dt):
        return v.detach().to(device=dev, dtype=kind).reshape(-1).contiguous()

    am, asyn, thr = vec(p.alpha_mem), vec(p.alpha_syn), vec(p.threshold)
    args = [t, b, n, x, vec(p.indptr, torch.int64), vec(p.indices, torch.int64), vec(p.weights),
            am, am.numel(), asyn, asyn.numel(), thr, thr.numel(),
            vec(p.n_ref, torch.int64).expand(n).contiguous(),
            (np.float32 if dt == torch.float32 else np.float64)(p.v_reset),
            state.v.to(dt).contiguous(), state.i.to(dt).contiguous(),
            state.ref.to(torch.int64).contiguous(), state.s.to(dt).contiguous(), s_out, v_out,
            v_fin, i_fin, r_fin, int(record), torch.empty(b, 2 * n, dtype=dt, device=dev)]
    conv = [np.int32(a) if isinstance(a, int) else
            (cupy.from_dlpack(a) if isinstance(a, torch.Tensor) else a) for a in args]
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(dev).cuda_stream)
    if t > 0 and b > 0:
        with cupy.cuda.Device(idx):
            _module(idx).get_function(f"lsm_forward_{'f32' if dt == torch.float32 else 'f64'}")(
                (b,), (THREADS,), tuple(conv), stream=stream)
    else:
        v_fin.copy_(state.v), i_fin.copy_(state.i), r_fin.copy_(state.ref)
    CALLS["fwd"] += 1
    final = LSMState(v_fin, i_fin, r_fin, (s_out[-1] if t else state.s).clone())
    return (s_out, final, v_out) if record else (s_out, final)
