"""CUDA backend of the LIF-family and LI kernels: CuPy RawModule over ``cuda/lif.cu``, ``li.cu``.

The ``.cu`` sources are compiled by NVRTC at run time (no nvcc) with the options of
:data:`spiking.kernels.nvrtc.OPTIONS` and launched on torch's current stream, one thread per
neuron looping over T (see the sources for the layout and the update). float32, float64,
float16 and bfloat16 inputs are supported (half types computed in float32). The kernels are
the CUDA implementations of the custom ops ``spiking::{lif,li}_{fwd,bwd}`` defined in
:mod:`spiking.kernels.fused`, which carry the autograd and ``torch.compile`` registration.

Memory kept for backward per neuron-step (float32 compute): LIF 4 B (pre-reset membrane h),
+4 B for the synaptic current, +4 B for the adaptation; LI nothing for float32/float64
inputs (the output is the membrane), 4 B of float32 membrane for float16/bfloat16 inputs,
+4 B for the synaptic current.
"""

from __future__ import annotations

import numpy as np
import torch

from spiking.kernels import fused, nvrtc

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run
BLOCK = 128  # threads per block; one thread per neuron
SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16",
          torch.bfloat16: "bf16"}
_MODULES: dict[str, object] = {}


def _function(source: str, name: str, dtype: torch.dtype):
    import cupy

    if dtype not in SUFFIX:
        raise ValueError(f"CUDA kernels support {sorted(map(str, SUFFIX))}, got {dtype}")
    mod = _MODULES.get(source)
    if mod is None:
        code = (nvrtc.CUDA_DIR / source).read_text()
        mod = cupy.RawModule(code=code, options=(*nvrtc.OPTIONS,
                                                 f"--include-path={nvrtc.CUDA_DIR}"))
        _MODULES[source] = mod
    return mod.get_function(f"{name}_{SUFFIX[dtype]}")


def _ptr(t) -> np.uint64:
    """A kernel pointer argument: the tensor's address, or a null pointer when absent."""
    return np.uint64(0 if t is None or t.numel() == 0 else t.data_ptr())


def _c(t):
    return None if t is None or t.numel() == 0 else t.contiguous()


def _grad_rows(g, m: int):
    """The gradient of the output ``[T, M]`` and its time stride for the backward kernel: one
    broadcast over time (stride 0, as the gradient of a sum over steps arrives) as its single
    row with stride 0, instead of a materialised ``[T, M]`` copy; else contiguous, stride M."""
    if fused.broadcast_over_time(g):
        return g[:1].contiguous(), 0
    return _c(g), m


def _launch(source: str, name: str, dtype: torch.dtype, device: torch.device, m: int, args):
    import cupy

    if m == 0:
        return
    with cupy.cuda.Device(device.index):
        fn = _function(source, name, dtype)  # on the tensor's device: modules load per device
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        with stream:
            fn(((m + BLOCK - 1) // BLOCK,), (BLOCK,), tuple(args))


def _param_args(params):
    out = []
    for q in params:
        out += [_ptr(q), np.int32(q.numel())]
    return out


def _scalar(c: torch.dtype):
    return np.float64 if c == torch.float64 else np.float32


def lif_forward(x, v0, i0, a0, params, cfg, sur_alpha, record):
    CALLS["fwd"] += 1
    syn, ada = bool(cfg[0]), bool(cfg[1])
    t, m = x.shape
    c = params[0].dtype

    def opt(flag, shape, dtype):
        return fused.alloc(shape if flag else (0,), dtype, x.device)
    out, vT = fused.alloc(x.shape, x.dtype, x.device), fused.alloc(v0.shape, v0.dtype, v0.device)
    iT, aT = opt(syn, (m,), v0.dtype), opt(ada, (m,), v0.dtype)
    h = fused.alloc((t, m), c, x.device)
    i_st, a_st = opt(syn, (t, m), c), opt(ada, (t, m), c)
    v_tr = opt(record, (t, m), v0.dtype)
    i_tr, a_tr = opt(record and syn, (t, m), v0.dtype), opt(record and ada, (t, m), v0.dtype)
    params = [q.contiguous() for q in params]
    args = [_ptr(x), _ptr(v0), _ptr(i0), _ptr(a0), *_param_args(params), np.int32(t),
            np.int64(m), *[np.int32(v) for v in (syn, ada, cfg[2], cfg[3], cfg[4], record)],
            *[_ptr(v) for v in (out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr)]]
    _launch("lif.cu", "lif_fwd", x.dtype, x.device, m, args)
    return out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr


def lif_backward(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0, h, i_st, a_st, x,
                 params, cfg, sur_alpha):
    CALLS["bwd"] += 1
    t, m = h.shape
    syn, ada = bool(cfg[0]), bool(cfg[1])
    s, c = v0.dtype, h.dtype
    gx, gv0 = fused.alloc((t, m), s, h.device), fused.alloc(v0.shape, v0.dtype, v0.device)
    gi0 = fused.alloc((m if syn else 0,), s, h.device)
    ga0 = fused.alloc((m if ada else 0,), s, h.device)
    gp = fused.alloc((len(fused.LIF_PARAMS), m), c, h.device)
    g_out, g_ts = _grad_rows(g_out, m)
    grads = [g_out, *[_c(g) for g in (g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr)]]
    params = [q.contiguous() for q in params]
    k1, k2 = fused.surrogate_consts(cfg[5], sur_alpha)
    f = _scalar(c)
    args = [*[_ptr(g) for g in grads], _ptr(v0), _ptr(i0), _ptr(a0), _ptr(h), _ptr(i_st),
            _ptr(a_st), _ptr(x), *_param_args(params), np.int32(t), np.int64(m),
            *[np.int32(v) for v in (syn, ada, cfg[2], cfg[3], cfg[4], cfg[5])], f(k1), f(k2),
            np.int64(g_ts), _ptr(gx), _ptr(gv0), _ptr(gi0), _ptr(ga0), _ptr(gp)]
    _launch("lif.cu", "lif_bwd", s, h.device, m, args)
    return gx, gv0, gi0, ga0, gp


def li_forward(x, v0, i0, params, cfg, record):
    CALLS["fwd"] += 1
    syn = bool(cfg[0])
    t, m = x.shape
    c = params[0].dtype

    def opt(flag, shape, dtype):
        return fused.alloc(shape if flag else (0,), dtype, x.device)
    out, vT = fused.alloc(x.shape, x.dtype, x.device), fused.alloc(v0.shape, v0.dtype, v0.device)
    iT = opt(syn, (m,), v0.dtype)
    v_st = opt(x.dtype != c, (t, m), c)
    i_st, i_tr = opt(syn, (t, m), c), opt(record and syn, (t, m), v0.dtype)
    params = [q.contiguous() for q in params]
    args = [_ptr(x), _ptr(v0), _ptr(i0), *_param_args(params), np.int32(t), np.int64(m),
            np.int32(syn), np.int32(record),
            *[_ptr(v) for v in (out, vT, iT, v_st, i_st, i_tr)]]
    _launch("li.cu", "li_fwd", x.dtype, x.device, m, args)
    return out, vT, iT, v_st, i_st, i_tr


def li_backward(g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, params, cfg):
    CALLS["bwd"] += 1
    t, m = v_st.shape
    syn = bool(cfg[0])
    s, c = v0.dtype, params[0].dtype
    gx, gv0 = fused.alloc((t, m), s, v_st.device), fused.alloc(v0.shape, v0.dtype, v0.device)
    gi0 = fused.alloc((m if syn else 0,), s, v_st.device)
    gp = fused.alloc((len(fused.LI_PARAMS), m), c, v_st.device)
    grads = [_c(g) for g in (g_out, g_vT, g_iT, g_itr)]
    params = [q.contiguous() for q in params]
    args = [*[_ptr(g) for g in grads], _ptr(v0), _ptr(i0), _ptr(v_st), _ptr(i_st), _ptr(x),
            *_param_args(params), np.int32(t), np.int64(m), np.int32(syn), _ptr(gx),
            _ptr(gv0), _ptr(gi0), _ptr(gp)]
    _launch("li.cu", "li_bwd", s, v_st.device, m, args)
    return gx, gv0, gi0, gp


fused.register_kernel("lif_fwd", "cuda", lif_forward)
fused.register_kernel("lif_bwd", "cuda", lif_backward)
fused.register_kernel("li_fwd", "cuda", li_forward)
fused.register_kernel("li_bwd", "cuda", li_backward)


def run_lif(x, state, p, record=False):
    """Fused CUDA run; same signature and returns as :func:`spiking.kernels.lif.reference`."""
    return fused.run_lif(x, state, p, record, backend="cuda")


def run_li(x, state, p, record=False):
    """Fused CUDA run; same signature and returns as :func:`spiking.kernels.li.reference`."""
    return fused.run_li(x, state, p, record, backend="cuda")
