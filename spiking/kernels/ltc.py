r"""LTC: liquid time-constant cell with the fused semi-implicit ODE unfold, written once.

Hasani, Lechner, Amini, Rus & Grosu, "Liquid Time-constant Networks", AAAI 2021 (the fused
solver of its section "An ODE solver for LTCs"); the conductance-based form and the order of
operations follow ncps' ``LTCCell`` (Lechner & Hasani, Apache-2.0), which this module
reproduces to rounding error (see ``tests/kernels/test_ltc.py``).

Each of the N units is a membrane with capacitance ``cm`` (conductance x seconds), leak
conductance ``gleak`` and leak reversal ``vleak``; so ``cm / gleak`` is its leak time constant in
**seconds**. Sensory synapses (input j -> unit i, ``[N_in, N]``) and recurrent synapses
(unit j -> unit i, ``[N, N]``) each have a weight ``w >= 0``, a sigmoid gate with slope ``sigma``
and midpoint ``mu``, and a reversal potential ``erev``. The ODE is

    cm dv_i/dt = gleak_i (vleak_i - v_i)
               + sum_j w_ji sigmoid(sigma_ji (pre_j - mu_ji)) (erev_ji - v_i)

Per time step t with elapsed time ``D[t]`` seconds (``timespans``; default ``dt``), for input
``x[t]`` ``[B, N_in]`` and state ``v[t-1]`` ``[B, N]``; K = ``ode_unfolds``:

.. code-block:: text

    u      = x[t] * input_w + input_b            (input mapping; "linear": no + input_b;
                                                  None: u = x[t])
    a_s    = ws * sigmoid(sigma_s * (u[:, j] - mu_s))        [B, N_in, N] per synapse j -> i
    num_s  = sum_j a_s * erev_s ;   den_s = sum_j a_s       [B, N]
    c      = cm / (D[t] / K)                                 (cm_t: capacitance over sub-step)
    v0     = v[t-1]
    for k = 1..K:                                            (semi-implicit Euler sub-steps)
        a_r  = w * sigmoid(sigma * (v_{k-1}[:, j] - mu))     [B, N, N] per synapse j -> i
        num  = c * v_{k-1} + gleak * vleak + sum_j a_r * erev + num_s
        den  = c + gleak + sum_j a_r + den_s
        v_k  = num / (den + eps)
    v[t]   = v_K
    y[t]   = v[t][:, :M] * output_w + output_b               (M = out_features motor units;
                                                              "linear": no + output_b;
                                                              None: y[t] = v[t][:, :M])

The sub-step is the paper's fused solver: the synaptic gates are taken at ``v_{k-1}``, the
conductance terms at ``v_k``, which keeps ``v`` in the convex hull of ``v_{k-1}``, ``vleak``
and the reversals (stable for any step length). The kernel receives the positive quantities
``ws, w, cm, gleak`` already constrained and masked; the module
(:class:`spiking.neurons.LTC`) applies softplus to its raw parameters and multiplies the
optional sparsity masks in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiking.kernels import dispatch

# ncps LTCCell defaults: ode_unfolds=6, epsilon=1e-8 (ncps/torch/ltc_cell.py).
DEFAULT_UNFOLDS = 6
DEFAULT_EPS = 1e-8


class LTCParams(NamedTuple):
    """Parameters of the LTC update (shapes: N_in inputs, N units, M motor outputs)."""

    sensory_w: torch.Tensor       # [N_in, N], >= 0 (masked)
    sensory_sigma: torch.Tensor   # [N_in, N]
    sensory_mu: torch.Tensor      # [N_in, N]
    sensory_erev: torch.Tensor    # [N_in, N]
    w: torch.Tensor               # [N, N], >= 0 (masked)
    sigma: torch.Tensor           # [N, N]
    mu: torch.Tensor              # [N, N]
    erev: torch.Tensor            # [N, N]
    cm: torch.Tensor              # [N], > 0, conductance x seconds
    gleak: torch.Tensor           # [N], > 0
    vleak: torch.Tensor           # [N]
    dt: float = 1e-3              # default elapsed time of one step (s)
    ode_unfolds: int = DEFAULT_UNFOLDS
    eps: float = DEFAULT_EPS
    input_w: torch.Tensor | None = None    # [N_in]
    input_b: torch.Tensor | None = None    # [N_in]
    output_w: torch.Tensor | None = None   # [M]
    output_b: torch.Tensor | None = None   # [M]
    out_features: int | None = None        # M (None: all N units)


class LTCState(NamedTuple):
    """State of an LTC layer: the membrane potentials ``v`` ``[B, N]``."""

    v: torch.Tensor


def initial_state(x_t: torch.Tensor, p: LTCParams) -> LTCState:
    """Zeros ``[B, N]`` (ncps' default initial state)."""
    return LTCState(x_t.new_zeros(x_t.shape[0], p.cm.shape[-1]))


def map_inputs(x_t: torch.Tensor, p: LTCParams) -> torch.Tensor:
    u = x_t if p.input_w is None else x_t * p.input_w
    return u if p.input_b is None else u + p.input_b


def map_outputs(v: torch.Tensor, p: LTCParams) -> torch.Tensor:
    y = v if p.out_features is None else v[..., :p.out_features]
    y = y if p.output_w is None else y * p.output_w
    return y if p.output_b is None else y + p.output_b


def sensory_drive(u: torch.Tensor, p: LTCParams):
    """(num_s, den_s) ``[B, N]`` of the sensory synapses for mapped inputs ``u`` ``[B, N_in]``."""
    a = p.sensory_w * torch.sigmoid(p.sensory_sigma * (u.unsqueeze(-1) - p.sensory_mu))
    return (a * p.sensory_erev).sum(-2), a.sum(-2)


def _elapsed(delta, like: torch.Tensor):
    """Elapsed time of one step as a float or a ``[B, 1]`` tensor broadcasting over units."""
    if isinstance(delta, torch.Tensor):
        delta = delta.to(like.dtype)
        return delta.reshape(-1, 1) if delta.dim() >= 1 else delta
    return float(delta)


def step(x_t: torch.Tensor, state: LTCState, p: LTCParams, delta=None):
    """One time step of ``delta`` seconds (float, 0-d or ``[B]`` tensor; None: ``p.dt``).

    Returns ``(y[t], LTCState(v[t]))`` as documented above.
    """
    delta = p.dt if delta is None else delta
    num_s, den_s = sensory_drive(map_inputs(x_t, p), p)
    c = p.cm / (_elapsed(delta, x_t) / p.ode_unfolds)
    leak = p.gleak * p.vleak
    v = state.v
    for _ in range(p.ode_unfolds):
        a = p.w * torch.sigmoid(p.sigma * (v.unsqueeze(-1) - p.mu))
        num = c * v + leak + (a * p.erev).sum(-2) + num_s
        den = c + p.gleak + a.sum(-2) + den_s
        v = num / (den + p.eps)
    return map_outputs(v, p), LTCState(v)


def reference(x: torch.Tensor, state: LTCState, p: LTCParams, record: bool = False,
              timespans: torch.Tensor | None = None):
    """The specification: loop `step` over time. x: ``[T, B, N_in]``.

    ``timespans``: None (every step lasts ``p.dt``), ``[T]`` or ``[T, B]`` seconds.
    Returns ``(y [T, B, M], final LTCState)``; with ``record=True`` also the trajectory
    ``LTCState(v [T, B, N])``.
    """
    outs, vs = [], []
    for t in range(x.shape[0]):
        delta = None if timespans is None else timespans[t]
        y, state = step(x[t], state, p, delta)
        outs.append(y)
        vs.append(state.v)
    if outs:
        out = torch.stack(outs)
    else:
        m = p.cm.shape[-1] if p.out_features is None else p.out_features
        out = x.new_zeros(0, x.shape[1], m)
    if not record:
        return out, state
    traj = torch.stack(vs) if vs else x.new_zeros(0, *state.v.shape)
    return out, state, LTCState(traj)


def run(x: torch.Tensor, state: LTCState, p: LTCParams, backend: str = "auto",
        record: bool = False, timespans: torch.Tensor | None = None):
    """Dispatch the sequence to a backend (see :mod:`spiking.kernels.dispatch`)."""
    _, fn = dispatch.select("ltc", backend, x, reference)
    return fn(x, state, p, record=record, timespans=timespans)


def op_counts(shape_tbn, p: LTCParams) -> dict[str, int]:
    """Operations of one sequence of shape ``(T, B, N_in)`` as coded above.

    ``synaptic_ops``: per synapse evaluation sub, mul (sigma), sigmoid, mul (w), mul (erev) and
    two accumulations = 7; sensory synapses once per step, recurrent ones once per unfold.
    ``neuron_ops``: per unit and unfold c*v, two adds to num, two to den, +eps, divide = 7, plus
    per step the cm/(D/K) divide and gleak*vleak = 2; input/output mapping 2 per feature.
    ``activations``: sigmoid evaluations (a subset of ``synaptic_ops``, for energy models that
    price them separately). ``membrane_updates``: one per unit per unfold.
    """
    t, b, n_in = shape_tbn
    n = p.cm.shape[-1]
    m = n if p.out_features is None else p.out_features
    k = p.ode_unfolds
    sens, rec = n_in * n, n * n
    per_step = {
        "synaptic_ops": 7 * (sens + k * rec),
        "neuron_ops": n * (7 * k + 2) + 2 * n_in + 2 * m,
        "activations": sens + k * rec,
        "membrane_updates": n * k,
    }
    return {key: val * t * b for key, val in per_step.items()}



dispatch.register_fused("ltc", "cpu", "spiking.kernels.cpu.ltc:run")
dispatch.register_fused("ltc", "cuda", "spiking.kernels.cuda_ltc:run")
