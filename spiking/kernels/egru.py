r"""EGRU: the event-based gated recurrent unit, written once (Subramoney et al., ICLR 2023).

"Efficient recurrent architectures through activity sparsity and sparse back-propagation through
time", A. Subramoney, K. K. Nazeer, M. Schöne, C. Mayr, D. Kappel, ICLR 2023, Sec. 3 (Eq. 4-6).
GRU units hold an internal state ``c``; a unit emits an event when ``c`` crosses its threshold
``theta``, only events are passed to the next step (and layer), and the event is subtracted from
the state (reset). The input projection is done outside the kernel (one dense matmul over all
steps): ``wx[t] = W x[t] + b`` ``[T, B, 3H]``, gate order (u, r, z). Per time step t, for one
sample (shapes ``[H]``; ``R = weight_hh`` ``[3H, H]`` split row-wise into ``R_u, R_r, R_z``):

.. code-block:: text

    u[t] = sigmoid(wx_u[t] + R_u y[t-1])                 update gate
    r[t] = sigmoid(wx_r[t] + R_r y[t-1])                 reset gate
    z[t] = tanh(wx_z[t] + R_z (r[t] * y[t-1]))           candidate (Cho et al. 2014 form)
    c[t] = u[t] * z[t] + (1 - u[t]) * c[t-1] - y[t-1]    internal state; "- y[t-1]": reset
    e[t] = H(c[t] - theta)                               event; H' := gamma * g(c - theta)
    y[t] = c[t] * e[t]                                   graded event, 0 when silent

``c[-1] = y[-1] = 0``. The reset subtracts the event emitted at the previous step (paper Eq. 5)
and carries gradient. The Heaviside's derivative is replaced by the pseudo-derivative
``gamma * g(x)`` with ``g`` a registered surrogate (:mod:`spiking.surrogate`); the default is the
paper's triangle ``g(x) = alpha * max(0, 1 - alpha |x|)`` (support ``|x| < 1/alpha``) with the
dampening ``gamma = 0.3`` of Bellec et al. 2018 (LSNN), which the EGRU paper adopts. The
threshold gets the pseudo-derivative too: ``dy/dtheta = -c * gamma * g(c - theta)``.

Event-driven cost (what the fused kernels exploit): ``y[t-1]`` is zero except on the units that
fired, so ``R y[t-1]`` reads only the columns of active units (``3H`` multiply-adds per event).
In the backward pass, ``dL/dc[t-1]`` needs ``dL/dy[t-1]`` only on units whose
``e + c * g`` is non-zero (active, or within the surrogate's support), so ``R^T delta`` is
evaluated only on those columns (sparse BPTT, paper Sec. 3.2); the reset gate's gradient is
non-zero only on active units. ``op_counts`` states both the dense and the event-driven counts.

Backends: ``reference`` (this loop, the specification), ``cpu`` (numba,
:mod:`spiking.kernels.cpu.egru`), ``cuda`` (CuPy, :mod:`spiking.kernels.cuda_egru`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from spiking import surrogate as _surrogate
from spiking.kernels import dispatch

#: Pseudo-derivative dampening: Bellec et al. 2018 (LSNN, "dampening factor" 0.3), used by EGRU.
DAMPENING = 0.3
#: Triangle sharpness: support |c - theta| < 1/alpha = 0.5 (EGRU paper's pseudo-derivative width).
TRIANGLE_ALPHA = 2.0


class EGRUParams(NamedTuple):
    weight_hh: torch.Tensor           # [3H, H], rows (u, r, z)
    threshold: torch.Tensor           # [H]
    surrogate: _surrogate.Surrogate = _surrogate.get("triangle", TRIANGLE_ALPHA)
    dampening: float = DAMPENING


class EGRUState(NamedTuple):
    """Internal state ``c`` and last emitted (graded) events ``y``, both ``[B, H]``."""

    c: torch.Tensor
    y: torch.Tensor


def hidden_size(p: EGRUParams) -> int:
    return int(p.weight_hh.shape[1])


def check(wx: torch.Tensor, state: EGRUState | None, p: EGRUParams) -> None:
    """Validate shapes at the boundary; raises ValueError naming the bad one."""
    if p.weight_hh.dim() != 2 or p.weight_hh.shape[0] != 3 * p.weight_hh.shape[1]:
        raise ValueError(f"weight_hh must be [3H, H], got {tuple(p.weight_hh.shape)}")
    h = hidden_size(p)
    if tuple(p.threshold.shape) != (h,):
        raise ValueError(f"threshold must be [H]=[{h}], got {tuple(p.threshold.shape)}")
    if wx.dim() != 3 or wx.shape[-1] != 3 * h:
        raise ValueError(f"wx must be [T, B, 3H]=[T, B, {3 * h}], got {tuple(wx.shape)}")
    if not wx.is_floating_point():
        raise ValueError(f"wx must be a floating tensor, got {wx.dtype}")
    if state is not None:
        for name, s in zip(state._fields, state):
            if tuple(s.shape) != (wx.shape[1], h):
                raise ValueError(f"state.{name} has shape {tuple(s.shape)}, expected "
                                 f"[B, H]=[{wx.shape[1]}, {h}]")
    if not float(p.dampening) > 0:
        raise ValueError(f"dampening must be > 0, got {p.dampening!r}")


def initial_state(wx_t: torch.Tensor, p: EGRUParams) -> EGRUState:
    """Rest state ``c = y = 0`` for one step's input ``wx_t`` ``[B, 3H]``."""
    z = wx_t.new_zeros(wx_t.shape[0], hidden_size(p))
    return EGRUState(z, z.clone())


def event(d: torch.Tensor, p: EGRUParams) -> torch.Tensor:
    """``H(d)`` forward, ``gamma * g(d)`` backward (the dampened pseudo-derivative)."""
    s = p.surrogate(d)
    sd = s.detach()
    return sd + p.dampening * (s - sd)  # forward: exactly sd (s - sd == 0)


def step(wx_t: torch.Tensor, state: EGRUState, p: EGRUParams):
    """One time step: ``(y[t], EGRUState(c[t], y[t]))`` as documented above."""
    h = hidden_size(p)
    w = p.weight_hh.to(wx_t.dtype)
    yp = state.y
    wu, wr, wz = wx_t[:, :h], wx_t[:, h:2 * h], wx_t[:, 2 * h:]
    u = torch.sigmoid(wu + yp @ w[:h].t())
    r = torch.sigmoid(wr + yp @ w[h:2 * h].t())
    z = torch.tanh(wz + (r * yp) @ w[2 * h:].t())
    c = u * z + (1 - u) * state.c - yp
    y = c * event(c - p.threshold.to(wx_t.dtype), p)
    return y, EGRUState(c, y)


def reference(wx: torch.Tensor, state: EGRUState, p: EGRUParams, record: bool = False):
    """The specification: loop :func:`step` over ``wx`` ``[T, B, 3H]``.

    Returns ``(y [T, B, H], final EGRUState)``; with ``record=True`` also the trajectory, an
    EGRUState of ``[T, B, H]`` tensors.
    """
    ys, cs = [], []
    for t in range(wx.shape[0]):
        y, state = step(wx[t], state, p)
        ys.append(y)
        cs.append(state.c)
    if ys:
        out = torch.stack(ys)
        traj = EGRUState(torch.stack(cs), out)
    else:
        out = wx.new_zeros(0, wx.shape[1], hidden_size(p))
        traj = EGRUState(out, out)
    return (out, state, traj) if record else (out, state)


def surrogate_consts(sid: int, alpha: float) -> tuple[float, float]:
    """(k1, k2) of built-in surrogate ``sid`` at sharpness ``alpha`` for the fused kernels
    (computed in double, like the reference's Python scalars): atan a/2, pi/2 a;
    straight_through a/2, 1/a; the others a, unused."""
    if sid == 0:
        return alpha / 2, math.pi / 2 * alpha
    if sid == 4:
        return alpha / 2, 1 / alpha
    return alpha, 0.0


def fused_unsupported(p: EGRUParams):
    def reason(backend: str) -> str | None:
        if p.surrogate.kernel_id is None:
            return (f"surrogate {p.surrogate.name!r} is user-registered; fused kernels implement "
                    f"only the built-ins")
        return None
    return reason


def run(wx: torch.Tensor, state: EGRUState | None, p: EGRUParams, backend: str = "auto",
        record: bool = False):
    """Validate, then run the sequence on a backend (see :mod:`spiking.kernels.dispatch`)."""
    check(wx, state, p)
    if state is None:
        state = initial_state(wx[0] if wx.shape[0] else wx.new_zeros(wx.shape[1:]), p)
    _, fn = dispatch.select("egru", backend, wx, reference, fused_unsupported(p))
    return fn(wx, state, p, record=record)


def op_counts(shape_tbh, input_size: int, *, events: int | None = None,
              input_events: int | None = None, backward_units: int | None = None
              ) -> dict[str, int]:
    """Operations of one forward sequence, dense and event-driven, beside the math above.

    ``shape_tbh`` = (T, B, H). ``events``: number of non-zero ``y[t]`` over the sequence that
    feed a next step (the fused kernels read one column of ``R`` per event; pass the count of
    ``y[:-1] != 0`` plus the initial state's). ``input_events``: non-zero input entries, if the
    input is itself sparse. ``backward_units``: unit-steps inside the backward support
    (``e + c g != 0``), for the sparse-BPTT count.

    - ``recurrent_macs_dense`` = T B 3H H (a plain GRU); ``recurrent_macs_event`` = 3H * events
    - ``input_macs_dense`` = T B 3H I; ``input_macs_event`` = 3H * input_events
    - ``neuron_ops`` = T B H * 14 (3 gate nonlinearities, the state update's 6 multiply-adds,
      threshold compare, event select, gate additions; counted from the update as coded)
    - ``backward_recurrent_macs_event`` = 3H * backward_units (``R^T delta`` columns)
    """
    t, b, h = (int(v) for v in shape_tbh)
    out = {
        "recurrent_macs_dense": t * b * 3 * h * h,
        "input_macs_dense": t * b * 3 * h * int(input_size),
        "neuron_ops": t * b * h * 14,
        "neuron_updates": t * b * h,
    }
    if events is not None:
        out["events"] = int(events)
        out["recurrent_macs_event"] = 3 * h * int(events)
    if input_events is not None:
        out["input_macs_event"] = 3 * h * int(input_events)
    if backward_units is not None:
        out["backward_recurrent_macs_event"] = 3 * h * int(backward_units)
    return out


dispatch.register_fused("egru", "cpu", "spiking.kernels.cpu.egru:run")
dispatch.register_fused("egru", "cuda", "spiking.kernels.cuda_egru:run")
