r"""CfC: closed-form continuous-time cell, written once.

Hasani, Lechner, Amini, Liebenwein, Ray, Tschaikowski, Teschl & Rus, "Closed-form
continuous-time neural networks", Nature Machine Intelligence 4, 992-1003 (2022), eq. (3)
(CfC) and eq. (2) (the direct "pure" solution); the modes and order of operations follow ncps'
``CfCCell`` (Apache-2.0), which this module reproduces to rounding error (see
``tests/kernels/test_cfc.py``).

Per time step t with elapsed time ``D[t]`` seconds (``timespans``; default ``dt``), for input
``x[t]`` ``[B, N_in]`` and hidden state ``h[t-1]`` ``[B, H]``:

.. code-block:: text

    z_0  = concat(x[t], h[t-1])                          [B, N_in + H]
    z_l  = act(z_{l-1} W_l^T + b_l),  l = 1..L          backbone MLP (L = 0: z = z_0)
    s    = D[t] / time_scale                             elapsed time in units of time_scale

    mode "default" (paper eq. 3; gate sigma(-f s) with a learned bias head):
        f    = z W_f^T + b_f            g = tanh(z W_g^T + b_g)      hh = tanh(z W_h^T + b_h)
        gate = sigmoid(-f * s + (z W_tb^T + b_tb))
        h[t] = gate * g + (1 - gate) * hh
    mode "no_gate":
        h[t] = hh + gate * g                              (same f, g, hh, gate)
    mode "pure" (paper eq. 2, direct solution with x0 - A -> -A as in ncps):
        f    = z W_f^T + b_f
        h[t] = -A * exp(-s * (|w_tau| + |f|)) * f + A

    out[t] = h[t]

``act`` is ``lecun_tanh`` (1.7159 tanh(0.666 x), ncps' default backbone activation) or one of
``tanh | relu | silu | gelu``. ncps measures time in steps (``ts = 1`` per regular step);
here ``time_scale`` (seconds) converts: with ``time_scale = dt`` a regular step has ``s = 1``.
Correspondence with ncps' heads: ``f = -time_a``, ``tb = time_b``, ``g = ff2``, ``hh = ff1``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from spiking.kernels import dispatch

MODES = ("default", "no_gate", "pure")
ACTIVATIONS = ("lecun_tanh", "tanh", "relu", "silu", "gelu")


def lecun_tanh(x: torch.Tensor) -> torch.Tensor:
    # LeCun et al. 1998 "Efficient BackProp" scaled tanh; constants as in ncps' LeCun module.
    return 1.7159 * torch.tanh(0.666 * x)


_ACT = {"lecun_tanh": lecun_tanh, "tanh": torch.tanh, "relu": torch.relu, "silu": F.silu,
        "gelu": F.gelu}


class CfCParams(NamedTuple):
    """Parameters of the CfC update. Linear maps are ``(weight [out, in], bias [out])``."""

    backbone: tuple                  # ((W_1, b_1), ..., (W_L, b_L))
    f: tuple                         # (W_f, b_f) [H, n_z]
    g: tuple | None = None           # default / no_gate
    h: tuple | None = None           # default / no_gate
    tb: tuple | None = None          # default / no_gate
    A: torch.Tensor | None = None    # pure, [H]
    w_tau: torch.Tensor | None = None  # pure, [H]
    mode: str = "default"
    activation: str = "lecun_tanh"
    dt: float = 1e-3                 # default elapsed time of one step (s)
    time_scale: float = 1e-3         # seconds per unit of s


class CfCState(NamedTuple):
    """State of a CfC layer: the hidden state ``h`` ``[B, H]``."""

    h: torch.Tensor


def hidden_size(p: CfCParams) -> int:
    return p.f[0].shape[0]


def initial_state(x_t: torch.Tensor, p: CfCParams) -> CfCState:
    """Zeros ``[B, H]`` (ncps' default initial state)."""
    return CfCState(x_t.new_zeros(x_t.shape[0], hidden_size(p)))


def _elapsed(delta, like: torch.Tensor):
    if isinstance(delta, torch.Tensor):
        delta = delta.to(like.dtype)
        return delta.reshape(-1, 1) if delta.dim() >= 1 else delta
    return float(delta)


def step(x_t: torch.Tensor, state: CfCState, p: CfCParams, delta=None):
    """One time step of ``delta`` seconds (float, 0-d or ``[B]`` tensor; None: ``p.dt``).

    Returns ``(h[t], CfCState(h[t]))`` as documented above.
    """
    delta = p.dt if delta is None else delta
    s = _elapsed(delta, x_t) / p.time_scale
    z = torch.cat([x_t, state.h], dim=-1)
    act = _ACT[p.activation]
    for w, b in p.backbone:
        z = act(F.linear(z, w, b))
    f = F.linear(z, *p.f)
    if p.mode == "pure":
        h = -p.A * torch.exp(-s * (p.w_tau.abs() + f.abs())) * f + p.A
    else:
        g = torch.tanh(F.linear(z, *p.g))
        hh = torch.tanh(F.linear(z, *p.h))
        gate = torch.sigmoid(-f * s + F.linear(z, *p.tb))
        h = hh + gate * g if p.mode == "no_gate" else gate * g + (1 - gate) * hh
    return h, CfCState(h)


def reference(x: torch.Tensor, state: CfCState, p: CfCParams, record: bool = False,
              timespans: torch.Tensor | None = None):
    """The specification: loop `step` over time. x: ``[T, B, N_in]``.

    ``timespans``: None (every step lasts ``p.dt``), ``[T]`` or ``[T, B]`` seconds.
    Returns ``(h [T, B, H], final CfCState)``; with ``record=True`` also the trajectory
    ``CfCState(h [T, B, H])``.
    """
    outs = []
    for t in range(x.shape[0]):
        delta = None if timespans is None else timespans[t]
        y, state = step(x[t], state, p, delta)
        outs.append(y)
    out = torch.stack(outs) if outs else x.new_zeros(0, x.shape[1], hidden_size(p))
    if not record:
        return out, state
    return out, state, CfCState(out)


def run(x: torch.Tensor, state: CfCState, p: CfCParams, backend: str = "auto",
        record: bool = False, timespans: torch.Tensor | None = None):
    """Dispatch the sequence to a backend (see :mod:`spiking.kernels.dispatch`)."""
    _, fn = dispatch.select("cfc", backend, x, reference)
    return fn(x, state, p, record=record, timespans=timespans)


def op_counts(shape_tbn, p: CfCParams) -> dict[str, int]:
    """Operations of one sequence of shape ``(T, B, N_in)`` as coded above.

    ``macs``: multiply-accumulates of the backbone and heads (weights only, biases in
    ``neuron_ops``). ``activations``: nonlinear evaluations (backbone act, tanh, sigmoid, exp).
    ``neuron_ops``: elementwise work per hidden unit (bias adds, f*s, gate mixing).
    ``neuron_updates``: hidden units updated (one per unit and step).
    """
    t, b, _n_in = shape_tbn
    hsz = hidden_size(p)
    macs, acts, ops = 0, 0, 0
    for w, _ in p.backbone:
        macs += w.numel()
        acts += w.shape[0]
        ops += w.shape[0]
    heads = [p.f] if p.mode == "pure" else [p.f, p.g, p.h, p.tb]
    for w, _ in heads:
        macs += w.numel()
        ops += w.shape[0]
    if p.mode == "pure":
        acts += hsz                 # exp
        ops += 7 * hsz              # |w_tau|+|f|, *s, negate, *f, *-A, +A
    else:
        acts += 3 * hsz             # tanh, tanh, sigmoid
        ops += 5 * hsz              # -f*s, +tb, gate*g, (1-gate)*hh, sum
    per_step = {"macs": macs, "activations": acts, "neuron_ops": ops, "neuron_updates": hsz}
    return {key: val * t * b for key, val in per_step.items()}
