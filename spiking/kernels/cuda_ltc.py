r"""Fused CUDA LTC: the whole time loop and its K ODE unfolds in one kernel per direction.

The update is the one of :mod:`spiking.kernels.ltc` (its docstring is the spec); the backward
is the derivation of :mod:`spiking.kernels.cpu.ltc`, written out in ``cuda/ltc.cu``. As on the
CPU, only the sequential part is fused; the parts without a recurrence run as batched torch
ops over all T steps at once (autograd differentiates them):

.. code-block:: text

    torch:  u = map_inputs(x);  (num_s, den_s) = sensory_drive(u)    [T, B, N] each
            h = D / K                                                [T, B] seconds
    CUDA:   c = cm / h;  v[t] = K semi-implicit unfolds from v[t-1], for t = 0..T-1
    torch:  y = map_outputs(v)

``cuda/ltc.cu`` is compiled by NVRTC at run time (``cupy.RawModule``, no nvcc) with the
options of :data:`spiking.kernels.nvrtc.OPTIONS` and launched on torch's current stream: one
thread block per batch element (the recurrent synapse sum couples the units of a sample),
units over threads, the state in shared memory. The kernels are the implementations of the
custom ops ``spiking::ltc_fwd`` / ``spiking::ltc_bwd`` (fake impls and autograd registered
below), so the fused path runs under autograd and ``torch.compile``.

dtypes: float32 and float64 are computed in their own precision; float16 and bfloat16 inputs
are computed in float32 (the module's parameters are float32 for them, so the sensory drive is
a float32 torch op already) and the outputs are cast back to the input dtype.

Memory kept for backward per unit-step (float32): the trajectory ``v`` (4 B, which is also the
output) and the kernel inputs ``num_s``, ``den_s`` (8 B); the per-unfold values (``v_k`` and
``den + eps``, ``2K + 1`` per unit) are recomputed per step into shared memory, never stored.
The backward also needs ``[S, 4, N, N]`` per-block synapse-gradient slices (``S = B`` up to
:data:`SYN_GRAD_BYTES`, fewer slices with atomic adds beyond).
"""

# torch.library infers the op schemas from these annotations.
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from spiking.kernels import common, nvrtc
from spiking.kernels import ltc as K
from spiking.kernels.dispatch import BackendUnavailable

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused kernel launch
SOURCE = "ltc.cu"
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
# 256 threads x at most 255 registers each fit the 64 K registers of one SM (CUDA C
# Programming Guide, "Compute Capabilities", table of technical specifications, cc 8.0 / 9.0),
# so the block always launches; larger N loops over units.
MAX_THREADS = 256
# Dynamic shared memory a block may use without opting in (48 KB, same guide and table);
# beyond it the kernels use a global workspace slice per block (same code, other pointer).
SHARED_LIMIT = 48 * 1024
SYN_GRAD_BYTES = 256 * 1024 ** 2  # cap of the [S, 4, N, N] synapse-gradient slices
_MODULES: dict[str, object] = {}


def threads(n: int) -> int:
    """Threads per block for N units: a multiple of the 32-thread warp, at most MAX_THREADS."""
    return min(MAX_THREADS, 32 * math.ceil(n / 32))


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fwd_slots(n: int) -> int:
    """Values per block of the forward: v_{k-1}, v_k, c (layout in ltc.cu)."""
    return 3 * n


def bwd_slots(n: int, unfolds: int) -> int:
    """Values per block of the backward: v_0..v_K (K + 1), den+eps (K), c, gv, gn, gd, gc (5),
    then the block reduction (threads rounded up to a power of two)."""
    return (2 * unfolds + 6) * n + _pow2(threads(n))


def _ptr(t: Tensor | None) -> np.uint64:
    return np.uint64(0 if t is None else t.data_ptr())


def _launch(name: str, dtype: torch.dtype, device: torch.device, blocks: int, nthreads: int,
            shared: int, args: list) -> None:
    """Launch ``<name>_<f32|f64>`` from ltc.cu on torch's current stream of ``device``."""
    import cupy

    if device.type != common.CUDA_DEVICE_TYPE:
        raise BackendUnavailable(f"ltc: the cuda kernels need CUDA tensors, got {device}")
    if SOURCE not in _MODULES:  # CuPy compiles and loads a RawModule once per device
        code = (nvrtc.CUDA_DIR / SOURCE).read_text()
        _MODULES[SOURCE] = cupy.RawModule(code=code, options=(*nvrtc.OPTIONS,))
    idx = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(idx):
        fn = _MODULES[SOURCE].get_function(f"{name}_{SUFFIX[dtype]}")
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        with stream:
            fn((blocks,), (nthreads,), tuple(args), shared_mem=shared)


def _scratch(slots: int, b: int, like: Tensor) -> tuple[int, Tensor | None]:
    """(dynamic shared bytes, global workspace or None) for ``slots`` values per block."""
    nbytes = slots * like.element_size()
    if nbytes <= SHARED_LIMIT:
        return nbytes, None
    return 0, like.new_empty(b * slots)


def forward_impl(v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps: float, unfolds: int):
    CALLS["fwd"] += 1
    t, b, n = ns.shape
    traj = torch.full((t, b, n), float("nan"), dtype=ns.dtype, device=ns.device)
    if t == 0 or b == 0:
        return traj
    shared, ws = _scratch(fwd_slots(n), b, ns)
    f = np.float64 if ns.dtype == torch.float64 else np.float32
    args = [*[_ptr(a) for a in (v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl)], f(eps),
            np.int32(unfolds), np.int32(t), np.int32(b), np.int32(n), _ptr(traj), _ptr(ws)]
    _launch("ltc_fwd", ns.dtype, ns.device, b, threads(n), shared, args)
    return traj


def syn_slices(b: int, n: int, itemsize: int) -> int:
    """Number S of [4, N, N] synapse-gradient slices (block b adds into slice b % S)."""
    return max(1, min(b, SYN_GRAD_BYTES // max(1, 4 * n * n * itemsize)))


def backward_impl(gtraj, traj, v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps: float,
                  unfolds: int):
    CALLS["bwd"] += 1
    t, b, n = ns.shape
    z = lambda *s: torch.zeros(*s, dtype=ns.dtype, device=ns.device)
    gv0, gh = torch.full_like(v0, float("nan")), torch.full_like(h, float("nan"))
    gns, gds = torch.full_like(ns, float("nan")), torch.full_like(ds, float("nan"))
    gunit = z(b, 3, n)
    s = syn_slices(b, n, ns.element_size())
    gsyn = z(s, 4, n, n)
    if t == 0 or b == 0:
        gv0, gh, gns, gds = z(b, n), z(t, b), z(t, b, n), z(t, b, n)
    else:
        shared, ws = _scratch(bwd_slots(n, unfolds), b, ns)
        f = np.float64 if ns.dtype == torch.float64 else np.float32
        tr = [a.t().contiguous() for a in (w, sig, mu, erev)]
        gtraj = gtraj.contiguous()  # kept alive until the launch is queued
        args = [*[_ptr(a) for a in (v0, h, ns, ds, cm, w, sig, mu, erev, *tr, gl, vl)],
                f(eps), np.int32(unfolds), np.int32(t), np.int32(b), np.int32(n), _ptr(traj),
                *[_ptr(a) for a in (gtraj, gv0, gh, gns, gds, gunit, gsyn)], np.int32(s),
                _ptr(ws)]
        _launch("ltc_bwd", ns.dtype, ns.device, b, threads(n), shared, args)
    gu, gs = gunit.sum(0), gsyn.sum(0).transpose(-1, -2)   # slices were (i, j): back to (j, i)
    own = lambda a: a.clone(memory_format=torch.contiguous_format)  # copies: no aliasing
    return (gv0, gh, gns, gds, own(gu[0]), *[own(g) for g in gs], own(gu[1]), own(gu[2]))


# ---- custom ops (autograd + torch.compile) ----------------------------------------------------

@torch.library.custom_op("spiking::ltc_fwd", mutates_args=())
def ltc_fwd(v0: Tensor, h: Tensor, ns: Tensor, ds: Tensor, cm: Tensor, w: Tensor, sig: Tensor,
            mu: Tensor, erev: Tensor, gl: Tensor, vl: Tensor, eps: float, unfolds: int
            ) -> Tensor:
    """-> trajectory v [T, B, N] of the K-unfold LTC recurrence (inputs contiguous)."""
    return forward_impl(v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps, unfolds)


@ltc_fwd.register_fake
def _ltc_fwd_fake(v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps, unfolds):
    return ns.new_empty(ns.shape)


@torch.library.custom_op("spiking::ltc_bwd", mutates_args=())
def ltc_bwd(gtraj: Tensor, traj: Tensor, v0: Tensor, h: Tensor, ns: Tensor, ds: Tensor,
            cm: Tensor, w: Tensor, sig: Tensor, mu: Tensor, erev: Tensor, gl: Tensor,
            vl: Tensor, eps: float, unfolds: int
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                       Tensor, Tensor]:
    """-> gradients of v0, h, ns, ds, cm, w, sigma, mu, erev, gleak, vleak."""
    return backward_impl(gtraj, traj, v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps,
                         unfolds)


@ltc_bwd.register_fake
def _ltc_bwd_fake(gtraj, traj, v0, h, ns, ds, cm, w, sig, mu, erev, gl, vl, eps, unfolds):
    e = torch.empty_like
    return (e(v0), e(h), e(ns), e(ds), e(cm), e(w), e(sig), e(mu), e(erev), e(gl), e(vl))


def _setup(ctx, inputs, output):
    *tensors, eps, unfolds = inputs
    ctx.eps, ctx.unfolds = eps, unfolds
    ctx.save_for_backward(output, *tensors)


def _backward(ctx, gtraj):
    traj, *tensors = ctx.saved_tensors
    grads = ltc_bwd(gtraj.contiguous(), traj, *tensors, ctx.eps, ctx.unfolds)
    return (*grads, None, None)


ltc_fwd.register_autograd(_backward, setup_context=_setup)


# ---- entry point ------------------------------------------------------------------------------

def _run(x: Tensor, state: K.LTCState, p: K.LTCParams, record: bool, timespans):
    t, b, _ = x.shape
    n = p.cm.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cast = {f: v.to(dtype) for f, v in p._asdict().items() if isinstance(v, Tensor)}
    pc = p._replace(**cast)
    num_s, den_s = K.sensory_drive(K.map_inputs(x.to(dtype), pc), pc)       # [T, B, N]
    if timespans is None:  # the reference's Python scalar dt / K, rounded once to dtype
        h = torch.full((t, b), float(p.dt) / p.ode_unfolds, dtype=dtype, device=x.device)
    else:
        ts = timespans.to(dtype)
        h = (ts.reshape(t, 1).expand(t, b) if ts.dim() == 1 else ts.reshape(t, b)) \
            / p.ode_unfolds
    c = lambda a: a.contiguous()
    traj = ltc_fwd(c(state.v.to(dtype)), c(h), c(num_s.expand(t, b, n)),
                   c(den_s.expand(t, b, n)), *[c(cast[f]) for f in ("cm", "w", "sigma", "mu",
                                                                  "erev", "gleak", "vleak")],
                   float(p.eps), int(p.ode_unfolds))
    out = K.map_outputs(traj, pc).to(x.dtype)
    final = K.LTCState((traj[-1] if t > 0 else state.v.to(dtype)).to(x.dtype))
    if not record:
        return out, final
    return out, final, K.LTCState(traj.to(x.dtype))


def run(x: Tensor, state: K.LTCState, p: K.LTCParams, record: bool = False,
        timespans: Tensor | None = None):
    """Same contract as :func:`spiking.kernels.ltc.reference`, fused over time on the GPU."""
    if x.dim() != 3:
        raise ValueError(f"ltc: input must be [T, B, N_in], got shape {tuple(x.shape)}")
    if not common.on_cuda(x):
        raise BackendUnavailable(f"ltc: backend 'cuda' needs CUDA tensors, got {x.device}")
    if not x.is_floating_point():
        raise ValueError(f"ltc: input must be a floating tensor, got dtype {x.dtype}")
    n = p.cm.shape[-1]
    if tuple(state.v.shape) != (x.shape[1], n):
        raise ValueError(f"ltc: state.v has shape {tuple(state.v.shape)}, expected "
                         f"[B, N] = [{x.shape[1]}, {n}]")
    return _run(x, state, p, record, timespans)
