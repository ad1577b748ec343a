r"""WKV: RWKV's receptance-weighted key-value recurrence (the time mixing of SpikeGPT), written once.

For each channel c (decay ``w[c] > 0``, bonus ``u[c]``) and keys/values ``k[t], v[t]``
(shapes ``[T, B, C]``), RWKV-4 (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer
Era", eq. 14) and SpikeGPT (Zhu et al. 2023, arXiv 2302.13939, eq. 5) compute

.. code-block:: text

    wkv[t] = ( sum_{i<t} e^{-(t-1-i) w + k[i]} v[i] + e^{u + k[t]} v[t] )
           / ( sum_{i<t} e^{-(t-1-i) w + k[i]}      + e^{u + k[t]}      )

i.e. a softmax-weighted average of past values with exponentially decaying weights. It is
evaluated as a recurrence on a state ``(a, b, p)`` that stores the two running sums scaled by
``e^{-p}``, ``p`` being their largest exponent (the running-max trick that keeps every ``exp``
argument <= 0, so nothing overflows however large ``k`` or ``T`` is). Per step, exactly as
coded in :func:`step` (and in the fused CPU/CUDA kernels):

.. code-block:: text

    q  = max(p, u + k[t]);    e1 = exp(p - q);    e2 = exp(u + k[t] - q)
    wkv[t] = (e1 a + e2 v[t]) / (e1 b + e2)
    q' = max(p - w, k[t]);    e1 = exp(p - w - q');   e2 = exp(k[t] - q')
    a <- e1 a + e2 v[t];   b <- e1 b + e2;   p <- q'

The empty state is ``a = b = 0, p = -1e38`` (RWKV's convention for "minus infinity").

Backends: ``reference`` loops :func:`step` with autograd (the specification); ``cpu``
(numba, :mod:`spiking.kernels.cpu.wkv`) and ``cuda`` (CuPy RawModule on ``cuda/wkv.cu``,
:mod:`spiking.kernels.cuda_wkv`) run the whole sequence in one kernel with a hand-written
backward (derived in :mod:`spiking.kernels.cpu.wkv`). The fused paths return the final state
without gradient and refuse an initial state that requires grad (use ``state.detach()`` or the
reference backend); their gradients for ``w, u, k, v`` equal the reference's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiking.kernels import dispatch

NEG_INF = -1e38  # RWKV-4's "minus infinity" for the empty state's exponent (RWKV-LM wkv_cuda.cu)


class WKVState(NamedTuple):
    """Per channel ``[B, C]``: scaled numerator ``a``, denominator ``b``, exponent ``p``."""

    a: torch.Tensor
    b: torch.Tensor
    p: torch.Tensor


def initial_state(k_t: torch.Tensor) -> WKVState:
    """Empty state for one step shaped like ``k_t`` ``[B, C]``."""
    z = torch.zeros_like(k_t)
    return WKVState(z, z.clone(), torch.full_like(k_t, NEG_INF))


def step(k_t: torch.Tensor, v_t: torch.Tensor, state: WKVState, w: torch.Tensor,
         u: torch.Tensor):
    """One step (see the module docstring). Returns ``(wkv[t], new WKVState)``."""
    a, b, p = state
    ww = u + k_t
    q = torch.maximum(p, ww)
    e1 = torch.exp(p - q)
    e2 = torch.exp(ww - q)
    y = (e1 * a + e2 * v_t) / (e1 * b + e2)
    ww = p - w
    q = torch.maximum(ww, k_t)
    e1 = torch.exp(ww - q)
    e2 = torch.exp(k_t - q)
    return y, WKVState(e1 * a + e2 * v_t, e1 * b + e2, q)


def reference(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              state: WKVState):
    """The specification: loop :func:`step` over ``k, v`` ``[T, B, C]``.

    Returns ``(wkv [T, B, C], final WKVState)``.
    """
    ys = []
    for t in range(k.shape[0]):
        y, state = step(k[t], v[t], state, w, u)
        ys.append(y)
    return (torch.stack(ys) if ys else k.new_zeros(k.shape)), state


def check_inputs(w, u, k, v, state: WKVState | None) -> None:
    if k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"WKV expects k and v of the same shape [T, B, C], got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    c = k.shape[2]
    for name, x in (("w", w), ("u", u)):
        if x.shape != (c,):
            raise ValueError(f"WKV: {name} must have shape ({c},) (one per channel), got "
                             f"{tuple(x.shape)}")
    if state is not None:
        for name, s in zip(WKVState._fields, state):
            if s.shape != k.shape[1:]:
                raise ValueError(f"WKV: state.{name} has shape {tuple(s.shape)}, expected "
                                 f"{tuple(k.shape[1:])} ([B, C])")


def _unsupported(k: torch.Tensor, state: WKVState):
    def reason(backend: str) -> str | None:
        if k.dtype not in (torch.float32, torch.float64):
            return f"fused WKV runs float32/float64, got {k.dtype}"
        if torch.is_grad_enabled() and any(s.requires_grad for s in state):
            return ("fused WKV does not propagate gradients into the initial state; pass "
                    "state detached or use backend='reference'")
        return None
    return reason


def run(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        state: WKVState | None = None, backend: str = "auto"):
    """WKV over a sequence on the chosen backend. Returns ``(wkv [T, B, C], final WKVState)``.

    ``w`` is the positive per-channel decay rate (RWKV parameterises it as ``exp(time_decay)``).
    """
    check_inputs(w, u, k, v, state)
    if state is None:
        state = initial_state(k.new_zeros(k.shape[1:]))
    _, fn = dispatch.select("wkv", backend, k, reference, _unsupported(k, state))
    return fn(w, u, k, v, state)


class FusedWKV(torch.autograd.Function):
    """Autograd wrapper shared by the fused backends; ``impl`` provides forward/backward."""

    @staticmethod
    def forward(ctx, w, u, k, v, a0, b0, p0, impl):
        w_, u_, k_, v_ = (x.detach().contiguous() for x in (w, u, k, v))
        y, sa, sb, sp, fin = impl.forward(w_, u_, k_, v_, a0.detach().contiguous(),
                                          b0.detach().contiguous(), p0.detach().contiguous())
        ctx.save_for_backward(w_, u_, k_, v_, y, sa, sb, sp)
        ctx.impl = impl
        ctx.mark_non_differentiable(*fin)
        return (y, *fin)

    @staticmethod
    def backward(ctx, gy, *_):
        w, u, k, v, y, sa, sb, sp = ctx.saved_tensors
        gw, gu, gk, gv = ctx.impl.backward(w, u, k, v, y, sa, sb, sp, gy.contiguous())
        return gw, gu, gk, gv, None, None, None, None


def fused_apply(impl, w, u, k, v, state: WKVState):
    y, a, b, p = FusedWKV.apply(w, u, k, v, state.a, state.b, state.p, impl)
    return y, WKVState(a, b, p)


def op_counts(t: int, b: int, c: int) -> dict[str, int]:
    """Arithmetic of one ``[T, B, C]`` WKV pass as coded above (per step and channel:
    2 max, 4 exp, 6 multiplies, 5 adds/subtracts, 1 divide). All dense (inputs are real)."""
    n = t * b * c
    return {"dense_macs": 6 * n, "exp": 4 * n, "elementwise": 8 * n, "spike_acs": 0}


dispatch.register_fused("wkv", "cpu", "spiking.kernels.cpu.wkv:run")
dispatch.register_fused("wkv", "cuda", "spiking.kernels.cuda_wkv:run")
