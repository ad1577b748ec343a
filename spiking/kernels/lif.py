r"""LIF family (LIF, CubaLIF, ALIF): the discrete update, written once.

One update covers the three neurons; absent parts (no synaptic current, no adaptation) are
``None`` in :class:`LIFParams` and :class:`LIFState`. Per time step t, for input ``x[t]``
(shapes ``[B, N, ...]``; parameters are scalars or broadcast over the trailing dims):

.. code-block:: text

    # synaptic current (CubaLIF, optional in ALIF); absent: i = None, drive = x[t]
    i[t]     = alpha_syn * i[t-1] + x[t]
    drive    = i[t]          if current_first  else  i[t-1]

    # delayed reset (snnTorch's default convention), else r = 0:
    r        = H(v[t-1] - theta)                       (no gradient)
    v_in     = v[t-1] * (1 - r) + v_reset * r          if reset == "zero"   else  v[t-1]

    # leaky integration towards v_leak
    h[t]     = alpha_mem * v_in + (1 - alpha_mem) * v_leak + gain * drive
               - theta * r                              (the "- theta*r" term if reset == "subtract")

    # adaptive threshold (ALIF), else a = None and theta_t = theta
    a_dec    = alpha_adapt * a[t-1]
    theta_t  = theta + a_dec

    s[t]     = H(h[t] - theta_t)     forward;   dH/dx := surrogate g(x)   in backward
    a[t]     = a_dec + adapt_jump * s[t]

    # immediate reset (default, reset_delay=False); with reset_delay=True v[t] = h[t]
    v[t]     = h[t] - theta_t * sg(s[t])                 reset == "subtract"
             = h[t] * (1 - sg(s[t])) + v_reset * sg(s[t]) reset == "zero"
             = h[t]                                       reset == "none"

``sg`` is stop-gradient: the reset carries no gradient (Zenke & Vogels 2021 found detaching
it helps learning); spikes carry the surrogate gradient into ``h`` and, for ALIF, into ``a``.
``alpha_* = decay(dt, tau_*)`` (``exp(-dt/tau)``, or ``1 - dt/tau`` for Euler) and ``gain`` is
1, or ``1 - alpha_mem`` with ``normalize_input=True`` (Norse's form of the ODE).

Sources: the LIF/LSNN equations of Gerstner et al., *Neuronal Dynamics* (2014) ch. 1 & 6, and
Bellec et al. 2018 (LSNN, adaptive threshold ``theta + a``); the orderings ``current_first``
and ``reset_delay`` exist so that snnTorch (``Leaky``/``Synaptic``: current first, delayed
reset) and Norse (``LIF``: current first, ``LSNN``: current last, immediate reset to
``v_reset``) are reproduced exactly, see :mod:`spiking.interop`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiking import surrogate as _surrogate
from spiking.kernels import dispatch

RESETS = ("subtract", "zero", "none")


class LIFParams(NamedTuple):
    alpha_mem: torch.Tensor
    threshold: torch.Tensor
    alpha_syn: torch.Tensor | None = None
    alpha_adapt: torch.Tensor | None = None
    adapt_jump: torch.Tensor | float = 0.0
    gain: torch.Tensor | float = 1.0
    v_leak: torch.Tensor | float = 0.0
    v_reset: torch.Tensor | float = 0.0
    reset: str = "subtract"
    reset_delay: bool = False
    current_first: bool = True
    surrogate: _surrogate.Surrogate = _surrogate.get("atan")


class LIFState(NamedTuple):
    """State of a LIF-family neuron: membrane ``v``, synaptic current ``i``, adaptation ``a``."""

    v: torch.Tensor
    i: torch.Tensor | None = None
    a: torch.Tensor | None = None


def initial_state(x_t: torch.Tensor, p: LIFParams) -> LIFState:
    """Rest state for one time step's input shape: v = v_leak, i = 0, a = 0."""
    v = torch.zeros_like(x_t) + p.v_leak
    zero = torch.zeros_like(x_t)
    return LIFState(
        v=v,
        i=zero if p.alpha_syn is not None else None,
        a=zero.clone() if p.alpha_adapt is not None else None,
    )


def step(x_t: torch.Tensor, state: LIFState, p: LIFParams):
    """One time step. Returns ``(s[t], LIFState(v[t], i[t], a[t]))`` as documented above."""
    if p.alpha_syn is not None:
        i_new = p.alpha_syn * state.i + x_t
        drive = i_new if p.current_first else state.i
    else:
        i_new, drive = None, x_t

    v = state.v
    if p.reset_delay and p.reset != "none":
        r = (v - p.threshold > 0).to(v.dtype).detach()
        if p.reset == "zero":
            v = v * (1 - r) + p.v_reset * r
    h = p.alpha_mem * v + (1 - p.alpha_mem) * p.v_leak + p.gain * drive
    if p.reset_delay and p.reset == "subtract":
        h = h - p.threshold * r

    if p.alpha_adapt is not None:
        a_dec = p.alpha_adapt * state.a
        theta = p.threshold + a_dec
    else:
        a_dec, theta = None, p.threshold

    s = p.surrogate(h - theta)
    a_new = a_dec + p.adapt_jump * s if a_dec is not None else None

    if p.reset_delay or p.reset == "none":
        v_new = h
    else:
        sd = s.detach()
        if p.reset == "subtract":
            v_new = h - theta * sd
        else:
            v_new = h * (1 - sd) + p.v_reset * sd
    return s, LIFState(v_new, i_new, a_new)


def reference(x: torch.Tensor, state: LIFState, p: LIFParams, record: bool = False):
    """The specification: loop `step` over time. x: [T, B, ...].

    Returns ``(spikes [T, B, ...], final LIFState)``; with ``record=True`` also the trajectory,
    a LIFState whose fields are stacked over time ``[T, B, ...]``.
    """
    spikes = []
    traj: list[LIFState] = []
    # unbind, not x[t]: indexing would make the backward pass O(T^2) in memory traffic
    for x_t in x.unbind(0):
        s, state = step(x_t, state, p)
        spikes.append(s)
        if record:
            traj.append(state)
    out = torch.stack(spikes) if spikes else x.new_zeros(x.shape)
    if not record:
        return out, state
    return out, state, stack_states(traj, x)


def stack_states(traj: list[LIFState], x: torch.Tensor) -> LIFState:
    if not traj:
        e = x.new_zeros(x.shape)
        return LIFState(e, None, None)
    return LIFState(*[
        torch.stack([getattr(s, f) for s in traj]) if getattr(traj[0], f) is not None else None
        for f in LIFState._fields
    ])


def fused_unsupported(p: LIFParams):
    """Reason (for the dispatcher) why these params are beyond the fused kernels, or None."""
    def reason(backend: str) -> str | None:
        if p.surrogate.kernel_id is None:
            return (f"surrogate {p.surrogate.name!r} is user-registered; fused kernels implement "
                    f"only the built-ins")
        return None
    return reason


def run(x: torch.Tensor, state: LIFState, p: LIFParams, backend: str = "auto",
        record: bool = False):
    """Dispatch the sequence to a backend (see :mod:`spiking.kernels.dispatch`)."""
    name, fn = dispatch.select("lif", backend, x, reference, fused_unsupported(p))
    if name == "reference" and x.dtype in HALF_DTYPES:
        return reference_float32(fn, x, state, p, record)
    return fn(x, state, p, record=record)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def reference_float32(ref, x: torch.Tensor, state, p, record: bool):
    """Run a reference loop on float16/bfloat16 inputs in float32 (as the fused kernels
    compute); outputs, final state and trajectory are cast back to ``x.dtype``."""
    def up(v):
        return v.float() if isinstance(v, torch.Tensor) and v.dtype in HALF_DTYPES else v
    res = ref(up(x), type(state)(*[up(v) for v in state]), type(p)(*[up(v) for v in p]),
              record=record)

    def down(v):
        return v.to(x.dtype) if isinstance(v, torch.Tensor) else v
    return (down(res[0]),) + tuple(type(st)(*[down(v) for v in st]) for st in res[1:])


def op_counts(shape_bt_n, p: LIFParams, spikes: int | None = None) -> dict[str, int]:
    """Operations of one sequence: per neuron-step membrane update; synaptic and adaptive work.

    `shape_bt_n` is (T, B, N) (N = neurons per sample). Counts are NeuroBench-style names:
    ``membrane_updates`` (one per neuron per step), ``neuron_ops`` (multiply-adds of the update
    as coded above), ``spikes`` if given.
    """
    t, b, n = shape_bt_n
    steps = t * b * n
    per = 3  # alpha*v, + gain*drive, compare with threshold
    if p.alpha_syn is not None:
        per += 2
    if p.alpha_adapt is not None:
        per += 3
    if p.reset != "none":
        per += 1
    out = {"membrane_updates": steps, "neuron_ops": steps * per}
    if spikes is not None:
        out["spikes"] = int(spikes)
    return out


dispatch.register_fused("lif", "cpu", "spiking.kernels.cpu.lif:run")
dispatch.register_fused("lif", "cuda", "spiking.kernels.cuda_lif:run_lif")
