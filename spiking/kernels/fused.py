r"""Shared plumbing of the fused LIF-family and LI kernels (CPU numba and CUDA CuPy backends).

The math lives in :mod:`spiking.kernels.lif` and :mod:`spiking.kernels.li` (the reference
loops); the fused backends run that update over the whole time loop in one kernel per
direction. This module holds what both backends share:

- packing of ``Params`` into 1-D tensors of the compute dtype: a parameter broadcast over the
  trailing dims of one step ``[B, N, ...]`` (scalar, per-neuron ``[N]``, ...) becomes a tensor
  of period ``P`` read as ``p[j % P]`` for flat neuron index ``j`` (other broadcast shapes are
  materialised to ``P = M``, the number of neurons of one step);
- four ``torch.library`` custom ops ``spiking::{lif,li}_{fwd,bwd}`` with fake (meta) impls and
  autograd registration, so the fused path works under ``torch.compile`` and autograd. Each
  op's body calls the kernel that the backend module registered for the tensor's device type;
- ``run_lif`` / ``run_li``: validation, dtype handling, flattening to ``[T, M]``, unflattening.

Backward is BPTT through the surrogate (the derivation is in the kernels' docstrings); every
kernel thread accumulates its own parameter gradients, which are summed per period here.

Memory saved for backward, per neuron-step, in the compute dtype (4 bytes in float32): the
pre-reset membrane ``h[t]`` always (spikes and the post-reset membrane are recomputed from it,
so no spike tensor is kept); plus the synaptic current ``i[t]`` for CubaLIF / ALIF with a
synapse, the adaptation ``a[t]`` for ALIF, and the input ``x[t]`` only when a learnable
``gain`` needs it (no synapse). LIF: 4 B per neuron-step in float32; CubaLIF 8 B; ALIF 8 B;
ALIF with a synapse 12 B. The LI readout saves its membrane (plus ``i[t]`` with a synapse,
``x[t]`` for a learnable gain without one).
The forward outputs (spikes, and trajectories with ``record=True``) belong to the caller.
"""

# torch.library infers the op schemas from these annotations: keep typing.Optional for them.
# ruff: noqa: UP045
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from spiking.kernels import common
from spiking.kernels.dispatch import BackendUnavailable, with_torch_threads

LIF_PARAMS = ("alpha_mem", "threshold", "alpha_syn", "alpha_adapt", "adapt_jump", "gain",
              "v_leak", "v_reset")
LI_PARAMS = ("alpha_mem", "alpha_syn", "gain", "v_leak")
RESET_IDS = {"subtract": 0, "zero": 1, "none": 2}
# cfg list of the LIF ops: [has_syn, has_adapt, reset_id, reset_delay, current_first,
#                           surrogate kernel_id, save_x]; of the LI ops: [has_syn, save_x].
# The backward op's cfg has one more entry: a bit mask of the params that need a gradient
# (bit k: LIF_PARAMS[k]; see param_grad_mask); kernels may skip the others and return 0 rows.

# (op name, device type) -> implementation; filled by the backend modules when imported.
KERNELS: dict[tuple[str, str], Callable] = {}


# Test hook: when set (e.g. to NaN), kernels pre-fill every output buffer with this value, so
# tests prove that each kernel writes every element it returns.
PREFILL: float | None = None


def alloc(shape, dtype: torch.dtype, device) -> Tensor:
    """An output buffer of a kernel (uninitialised, or PREFILL-filled for tests)."""
    if PREFILL is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.full(shape, PREFILL, dtype=dtype, device=device)


def broadcast_over_time(g: Tensor | None) -> bool:
    """Whether a ``[T, M]`` output gradient is one row broadcast over time (stride 0, T > 1),
    as the gradient of a sum over steps (``out.sum()``, a spike-count loss) arrives: the
    backward kernels then read that row for every step instead of a materialised copy."""
    return g is not None and g.dim() == 2 and g.shape[0] > 1 and g.stride(0) == 0


def register_kernel(op: str, device_type: str, fn: Callable) -> None:
    if device_type == "cpu":
        fn = with_torch_threads(fn)
    KERNELS[(op, device_type)] = fn


def _kernel(op: str, t: Tensor) -> Callable:
    fn = KERNELS.get((op, t.device.type))
    if fn is None:
        raise BackendUnavailable(f"spiking::{op}: no fused kernel is loaded for {t.device.type} "
                                 f"tensors (import spiking.kernels.cpu or cuda_lif first)")
    return fn


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pack(value, name: str, step_shape: tuple, dtype: torch.dtype, device) -> Tensor:
    """A parameter broadcast over one step ``step_shape`` as a 1-D tensor of period P."""
    m = math.prod(step_shape)
    if not isinstance(value, Tensor):
        return torch.full((1,), float(value), dtype=dtype, device=device)
    t = value.to(device=device, dtype=dtype)
    if t.numel() == 1:
        return t.reshape(1)
    shape = (1,) * (len(step_shape) - t.dim()) + tuple(t.shape)
    if t.dim() > len(step_shape) or any(a not in (1, b) for a, b in zip(shape, step_shape)):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, which does not broadcast over one "
                         f"time step of the input {tuple(step_shape)}")
    k = next(i for i, a in enumerate(shape) if a != 1)
    if all(a == b for a, b in zip(shape[k:], step_shape[k:])):
        return t.reshape(math.prod(step_shape[k:]))  # periodic: p[j % P]
    return t.reshape(shape).expand(step_shape).reshape(m)


def surrogate_consts(sid: int, alpha: float) -> tuple[float, float]:
    """Constants (k1, k2) of the built-in surrogate ``sid`` as the kernels use them, computed
    in double as the reference's Python scalars are (formulas in :mod:`spiking.surrogate`):
    atan: a/2, pi/2*a; fast_sigmoid, sigmoid, triangle: a, -; straight_through: a/2, 1/a."""
    if sid == 0:
        return alpha / 2, math.pi / 2 * alpha
    if sid == 4:
        return alpha / 2, 1 / alpha
    return alpha, 0.0


def _reduce(gp: Tensor, params: list[Tensor], need=None) -> list[Optional[Tensor]]:
    """Per-neuron parameter gradients [K, M] -> gradient of each packed parameter [P_k]
    (None for those that ``need``, when given, marks as not needing one)."""
    m = gp.shape[1]
    return [gp[k].reshape(m // p.numel(), p.numel()).sum(0) if need is None or need[k] else None
            for k, p in enumerate(params)]


def _needs_param_grads(ctx, index: int, n: int) -> list[bool]:
    """Per-parameter needs_input_grad of the list input ``index`` of a custom op."""
    need = ctx.needs_input_grad[index]
    return [bool(v) for v in need] if isinstance(need, (list, tuple)) else [bool(need)] * n


def param_grad_mask(cfg: list[int]) -> int:
    """Bit mask (bit k: LIF_PARAMS[k]) of the params whose gradient the backward op must
    compute: cfg[7] of the backward op's cfg, all of them when absent."""
    return int(cfg[7]) if len(cfg) > 7 else (1 << len(LIF_PARAMS)) - 1


def _empty(x: Tensor, dtype=None) -> Tensor:
    return x.new_empty(0, dtype=dtype)


# ---- LIF-family ops ---------------------------------------------------------------------------

@torch.library.custom_op("spiking::lif_fwd", mutates_args=())
def lif_fwd(x: Tensor, v0: Tensor, i0: Optional[Tensor], a0: Optional[Tensor],
            params: list[Tensor], cfg: list[int], sur_alpha: float, record: bool
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                       Tensor]:
    """-> out, vT, iT, aT, h_store, i_store, a_store, v_traj, i_traj, a_traj (empty if absent)."""
    return _kernel("lif_fwd", x)(x, v0, i0, a0, params, cfg, sur_alpha, record)


@lif_fwd.register_fake
def _lif_fwd_fake(x, v0, i0, a0, params, cfg, sur_alpha, record):
    c = params[0].dtype
    syn, ada = bool(cfg[0]), bool(cfg[1])

    def opt(flag, shape, dtype):
        return x.new_empty(shape, dtype=dtype) if flag else _empty(x, dtype)
    return (torch.empty_like(x), torch.empty_like(v0), opt(syn, v0.shape, v0.dtype),
            opt(ada, v0.shape, v0.dtype), x.new_empty(x.shape, dtype=c),
            opt(syn, x.shape, c), opt(ada, x.shape, c), opt(record, x.shape, v0.dtype),
            opt(record and syn, x.shape, v0.dtype), opt(record and ada, x.shape, v0.dtype))


@torch.library.custom_op("spiking::lif_bwd", mutates_args=())
def lif_bwd(g_out: Optional[Tensor], g_vT: Optional[Tensor], g_iT: Optional[Tensor],
            g_aT: Optional[Tensor], g_vtr: Optional[Tensor], g_itr: Optional[Tensor],
            g_atr: Optional[Tensor], v0: Tensor, i0: Optional[Tensor], a0: Optional[Tensor],
            h: Tensor, i_st: Tensor, a_st: Tensor, x: Optional[Tensor], params: list[Tensor],
            cfg: list[int], sur_alpha: float
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> grad x, grad v0, grad i0, grad a0 (empty if absent), per-neuron param grads [8, M]."""
    return _kernel("lif_bwd", h)(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0,
                                 h, i_st, a_st, x, params, cfg, sur_alpha)


@lif_bwd.register_fake
def _lif_bwd_fake(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0, h, i_st, a_st, x,
                  params, cfg, sur_alpha):
    s = v0.dtype
    return (h.new_empty(h.shape, dtype=s), torch.empty_like(v0),
            torch.empty_like(v0) if cfg[0] else _empty(v0),
            torch.empty_like(v0) if cfg[1] else _empty(v0),
            h.new_empty((len(LIF_PARAMS), h.shape[1])))


def _lif_setup(ctx, inputs, output):
    x, v0, i0, a0, params, cfg, sur_alpha, _record = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[4], output[5], output[6])
    ctx.cfg, ctx.sur_alpha = list(cfg), sur_alpha
    ctx.has = (i0 is not None, a0 is not None)
    ctx.save_for_backward(v0, i0, a0, output[4], output[5], output[6],
                          x if cfg[6] else None, *params)


def _lif_backward(ctx, g_out, g_vT, g_iT, g_aT, _gh, _gi, _ga, g_vtr, g_itr, g_atr):
    v0, i0, a0, h, i_st, a_st, x, *params = ctx.saved_tensors
    need = _needs_param_grads(ctx, 4, len(params))
    mask = sum(1 << k for k, v in enumerate(need) if v)
    gx, gv0, gi0, ga0, gp = lif_bwd(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0,
                                    h, i_st, a_st, x, params, [*ctx.cfg[:7], mask],
                                    ctx.sur_alpha)
    return (gx, gv0, gi0 if ctx.has[0] else None, ga0 if ctx.has[1] else None,
            _reduce(gp, params, need), None, None, None)


lif_fwd.register_autograd(_lif_backward, setup_context=_lif_setup)


# ---- LI ops -----------------------------------------------------------------------------------

@torch.library.custom_op("spiking::li_fwd", mutates_args=())
def li_fwd(x: Tensor, v0: Tensor, i0: Optional[Tensor], params: list[Tensor], cfg: list[int],
           record: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> out (= v trajectory), vT, iT, v_store (only if x is not the compute dtype), i_store,
    i_traj (empty if absent)."""
    return _kernel("li_fwd", x)(x, v0, i0, params, cfg, record)


@li_fwd.register_fake
def _li_fwd_fake(x, v0, i0, params, cfg, record):
    c = params[0].dtype
    syn = bool(cfg[0])

    def opt(flag, shape, dtype):
        return x.new_empty(shape, dtype=dtype) if flag else _empty(x, dtype)
    return (torch.empty_like(x), torch.empty_like(v0), opt(syn, v0.shape, v0.dtype),
            opt(x.dtype != c, x.shape, c), opt(syn, x.shape, c),
            opt(record and syn, x.shape, v0.dtype))


@torch.library.custom_op("spiking::li_bwd", mutates_args=())
def li_bwd(g_out: Optional[Tensor], g_vT: Optional[Tensor], g_iT: Optional[Tensor],
           g_itr: Optional[Tensor], v0: Tensor, i0: Optional[Tensor], v_st: Tensor,
           i_st: Tensor, x: Optional[Tensor], params: list[Tensor], cfg: list[int]
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> grad x, grad v0, grad i0 (empty if absent), per-neuron param grads [4, M]."""
    return _kernel("li_bwd", v_st)(g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, params, cfg)


@li_bwd.register_fake
def _li_bwd_fake(g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, params, cfg):
    return (v_st.new_empty(v_st.shape, dtype=v0.dtype), torch.empty_like(v0),
            torch.empty_like(v0) if cfg[0] else _empty(v0),
            v_st.new_empty((len(LI_PARAMS), v_st.shape[1]), dtype=params[0].dtype))


def _li_setup(ctx, inputs, output):
    x, v0, i0, params, cfg, _record = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[3], output[4])
    ctx.cfg, ctx.has_syn = list(cfg), i0 is not None
    v_st = output[3] if x.dtype != params[0].dtype else output[0]
    ctx.save_for_backward(v0, i0, v_st, output[4], x if cfg[1] else None, *params)


def _li_backward(ctx, g_out, g_vT, g_iT, _gv, _gi, g_itr):
    v0, i0, v_st, i_st, x, *params = ctx.saved_tensors
    gx, gv0, gi0, gp = li_bwd(g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, params, ctx.cfg)
    return gx, gv0, gi0 if ctx.has_syn else None, _reduce(gp, params), None, None


li_fwd.register_autograd(_li_backward, setup_context=_li_setup)


# ---- entry points used by the backend modules -------------------------------------------------

def _prepare(x: Tensor, state, backend: str):
    if x.dim() < 2:
        raise ValueError(f"input must be time-first [T, B, ...], got shape {tuple(x.shape)}")
    want = common.CUDA_DEVICE_TYPE if backend == "cuda" else "cpu"
    if x.device.type != want:
        raise BackendUnavailable(f"backend {backend!r} needs {want} tensors, got {x.device}")
    if not x.is_floating_point():
        raise ValueError(f"input must be a floating tensor, got dtype {x.dtype}")
    # CPU kernels compute and store float32/float64; CUDA stores float16/bfloat16 natively.
    s = x.dtype if (backend == "cuda" or x.dtype in (torch.float32, torch.float64)) \
        else torch.float32
    step_shape = tuple(x.shape[1:])
    for name, v in zip(state._fields, state):
        if v is not None and tuple(v.shape) != step_shape:
            raise ValueError(f"state.{name} has shape {tuple(v.shape)}, expected {step_shape} "
                             f"(one time step of the input)")
    return s, step_shape


def _flat(v: Optional[Tensor], s: torch.dtype, m: int) -> Optional[Tensor]:
    return None if v is None else v.to(s).reshape(m).contiguous()


def _need_x(gain, has_syn: bool) -> bool:
    return (not has_syn and isinstance(gain, Tensor) and gain.requires_grad
            and torch.is_grad_enabled())


def run_lif(x: Tensor, state, p, record: bool, backend: str):
    """Fused LIF-family sequence; same signature and returns as ``lif.reference``."""
    from spiking.kernels import lif as K

    if p.surrogate.kernel_id is None:
        raise BackendUnavailable(f"lif: backend {backend!r} cannot run: surrogate "
                                 f"{p.surrogate.name!r} is user-registered; fused kernels "
                                 f"implement only the built-ins")
    if p.reset not in RESET_IDS:
        raise ValueError(f"reset must be one of {tuple(RESET_IDS)}, got {p.reset!r}")
    s, step_shape = _prepare(x, state, backend)
    has_syn, has_ada = p.alpha_syn is not None, p.alpha_adapt is not None
    for flag, v, name in ((has_syn, state.i, "i"), (has_ada, state.a, "a")):
        if flag and v is None:
            raise ValueError(f"state.{name} is None but the params need it "
                             f"(alpha_{'syn' if name == 'i' else 'adapt'} is set)")
    if x.shape[0] == 0:
        return K.reference(x, state, p, record=record)
    c, t, m = compute_dtype(s), x.shape[0], math.prod(step_shape)
    params = [pack(getattr(p, n) if getattr(p, n) is not None else 0.0, n, step_shape, c,
                   x.device) for n in LIF_PARAMS]
    cfg = [int(has_syn), int(has_ada), RESET_IDS[p.reset], int(p.reset_delay),
           int(p.current_first), int(p.surrogate.kernel_id), int(_need_x(p.gain, has_syn))]
    res = lif_fwd(x.to(s).reshape(t, m).contiguous(), _flat(state.v, s, m),
                  _flat(state.i, s, m) if has_syn else None,
                  _flat(state.a, s, m) if has_ada else None,
                  params, cfg, float(p.surrogate.alpha), bool(record))
    out_dt = x.dtype

    def back(v, shape):
        return v.reshape(shape).to(out_dt)
    final = K.LIFState(back(res[1], step_shape), back(res[2], step_shape) if has_syn else None,
                       back(res[3], step_shape) if has_ada else None)
    out = back(res[0], x.shape)
    if not record:
        return out, final
    traj = K.LIFState(back(res[7], x.shape), back(res[8], x.shape) if has_syn else None,
                      back(res[9], x.shape) if has_ada else None)
    return out, final, traj


def run_li(x: Tensor, state, p, record: bool, backend: str):
    """Fused LI sequence; same signature and returns as ``li.reference``."""
    from spiking.kernels import li as K

    s, step_shape = _prepare(x, state, backend)
    has_syn = p.alpha_syn is not None
    if has_syn and state.i is None:
        raise ValueError("state.i is None but the params need it (alpha_syn is set)")
    if x.shape[0] == 0:
        return K.reference(x, state, p, record=record)
    c, t, m = compute_dtype(s), x.shape[0], math.prod(step_shape)
    params = [pack(getattr(p, n) if getattr(p, n) is not None else 0.0, n, step_shape, c,
                   x.device) for n in LI_PARAMS]
    cfg = [int(has_syn), int(_need_x(p.gain, has_syn))]
    res = li_fwd(x.to(s).reshape(t, m).contiguous(), _flat(state.v, s, m),
                 _flat(state.i, s, m) if has_syn else None, params, cfg, bool(record))
    out_dt = x.dtype
    out = res[0].reshape(x.shape).to(out_dt)
    final = K.LIState(res[1].reshape(step_shape).to(out_dt),
                      res[2].reshape(step_shape).to(out_dt) if has_syn else None)
    if not record:
        return out, final
    return out, final, K.LIState(out, res[5].reshape(x.shape).to(out_dt) if has_syn else None)
