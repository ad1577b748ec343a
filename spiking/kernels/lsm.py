r"""LSM reservoir: a fixed recurrent network of LIF neurons with refractoriness, event-driven.

Liquid state machine of Maass, Natschläger & Markram (2002), "Real-time computing without
stable states", Neural Computation 14(11): a fixed random recurrent spiking circuit whose
states are read out by a trained linear map. Here the circuit is current-based LIF with an
absolute refractory period. Per time step t, for one sample (shapes ``[N]``; ``x[t]`` is the
input current already projected onto the reservoir, ``W`` ``[N_pre, N_post]`` the fixed
recurrent weights stored as CSR by presynaptic neuron = each neuron's fan-out list):

.. code-block:: text

    rec[t]  = sum over j with s[t-1, j] = 1 of W[j, :]          (events x fan-out)
    i[t]    = alpha_syn * i[t-1] + x[t] + rec[t]
    free    = (ref[t-1] == 0)                                    not refractory
    v'      = alpha_mem * v[t-1] + i[t]          if free,   else v_reset
    s[t]    = free and (v' - theta > 0)
    v[t]    = v_reset if s[t] else v'
    ref[t]  = n_ref if s[t] else max(ref[t-1] - 1, 0)            (counted in steps)

``alpha_* = exp(-dt / tau_*)`` (:func:`spiking.kernels.common.decay`) and
``n_ref = round(t_ref / dt)``; a neuron that spikes is silent for the next ``n_ref`` steps
(Maass et al. 2002 used 3 ms for excitatory and 2 ms for inhibitory neurons; ``n_ref`` may be
per neuron). The reservoir is fixed: nothing in it is trained and no gradient flows through it;
a readout (:mod:`spiking.models.lsm`) is trained on its spike features.

Cost: the dense form computes ``s[t-1] @ W`` (``N^2`` multiply-adds per sample-step); the
event-driven form (fused kernels) adds one fan-out row per spike (``spikes x fan-out``
additions) plus ``O(N)`` elementwise work. Backends: ``reference`` (this loop with a dense
``W``, the specification), ``cpu`` (numba, :mod:`spiking.kernels.cpu.lsm`), ``cuda`` (CuPy,
:mod:`spiking.kernels.cuda_lsm`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiking.kernels import dispatch


class LSMParams(NamedTuple):
    indptr: torch.Tensor      # [N + 1] int64, CSR rows = presynaptic neurons
    indices: torch.Tensor     # [nnz] int64, postsynaptic neuron of each synapse
    weights: torch.Tensor     # [nnz] weight of each synapse
    alpha_mem: torch.Tensor   # [N] or scalar
    alpha_syn: torch.Tensor   # [N] or scalar
    threshold: torch.Tensor   # [N] or scalar
    n_ref: torch.Tensor       # [N] int64 refractory steps
    v_reset: float = 0.0


class LSMState(NamedTuple):
    """Membrane ``v``, synaptic current ``i``, refractory steps left ``ref``, last spikes ``s``."""

    v: torch.Tensor
    i: torch.Tensor
    ref: torch.Tensor
    s: torch.Tensor


def n_neurons(p: LSMParams) -> int:
    return int(p.indptr.numel() - 1)


def dense_weights(p: LSMParams, dtype=None, device=None) -> torch.Tensor:
    """The CSR weights as a dense ``[N_pre, N_post]`` matrix (for the reference and tests)."""
    n = n_neurons(p)
    rows = torch.repeat_interleave(torch.arange(n, device=p.indptr.device),
                                   p.indptr[1:] - p.indptr[:-1])
    w = torch.zeros(n, n, dtype=dtype or p.weights.dtype, device=device or p.weights.device)
    w[rows.to(w.device), p.indices.to(w.device)] = p.weights.to(w)
    return w


def check(x: torch.Tensor, state: LSMState | None, p: LSMParams) -> None:
    n = n_neurons(p)
    if x.dim() != 3 or x.shape[-1] != n:
        raise ValueError(f"input must be [T, B, N]=[T, B, {n}] (current onto the reservoir), "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"input must be a floating tensor, got {x.dtype}")
    if p.indices.numel() != p.weights.numel() or int(p.indptr[-1]) != p.indices.numel():
        raise ValueError(f"CSR arrays disagree: indptr[-1]={int(p.indptr[-1])}, "
                         f"{p.indices.numel()} indices, {p.weights.numel()} weights")
    if p.indices.numel() and (int(p.indices.min()) < 0 or int(p.indices.max()) >= n):
        raise ValueError(f"CSR indices must lie in [0, {n}), got range "
                         f"[{int(p.indices.min())}, {int(p.indices.max())}]")
    if state is not None:
        for name, s in zip(state._fields, state):
            if tuple(s.shape) != (x.shape[1], n):
                raise ValueError(f"state.{name} has shape {tuple(s.shape)}, expected [B, N]="
                                 f"[{x.shape[1]}, {n}]")


def initial_state(x_t: torch.Tensor, p: LSMParams) -> LSMState:
    """Rest: ``v = v_reset``, ``i = 0``, not refractory, no spikes; ``x_t`` is ``[B, N]``."""
    z = torch.zeros_like(x_t)
    return LSMState(z + p.v_reset, z.clone(), torch.zeros(x_t.shape, dtype=torch.int64,
                                                          device=x_t.device), z.clone())


def step(x_t: torch.Tensor, state: LSMState, p: LSMParams, w_dense: torch.Tensor):
    """One step (``w_dense`` from :func:`dense_weights`): ``(s[t], LSMState)``."""
    d = x_t.dtype
    rec = state.s @ w_dense.to(d)
    i = p.alpha_syn.to(d) * state.i + x_t + rec
    free = state.ref == 0
    v = torch.where(free, p.alpha_mem.to(d) * state.v + i, torch.full_like(i, p.v_reset))
    s = free & (v - p.threshold.to(d) > 0)
    v = torch.where(s, torch.full_like(v, p.v_reset), v)
    ref = torch.where(s, p.n_ref.expand_as(state.ref), (state.ref - 1).clamp(min=0))
    sf = s.to(d)
    return sf, LSMState(v, i, ref, sf)


@torch.no_grad()
def reference(x: torch.Tensor, state: LSMState, p: LSMParams, record: bool = False):
    """The specification: loop :func:`step`; returns ``(spikes [T, B, N], final LSMState)``
    (and with ``record=True`` the membrane trajectory ``[T, B, N]``)."""
    w = dense_weights(p, dtype=x.dtype, device=x.device)
    out, vs = [], []
    for t in range(x.shape[0]):
        s, state = step(x[t], state, p, w)
        out.append(s)
        vs.append(state.v)
    spikes = torch.stack(out) if out else x.new_zeros(x.shape)
    if record:
        return spikes, state, (torch.stack(vs) if vs else x.new_zeros(x.shape))
    return spikes, state


def run(x: torch.Tensor, state: LSMState | None, p: LSMParams, backend: str = "auto",
        record: bool = False):
    """Validate, then run on a backend (see :mod:`spiking.kernels.dispatch`)."""
    check(x, state, p)
    if state is None:
        state = initial_state(x[0] if x.shape[0] else x.new_zeros(x.shape[1:]), p)
    _, fn = dispatch.select("lsm", backend, x, reference)
    return fn(x.detach(), state, p, record=record)


def op_counts(shape_tbn, p: LSMParams, spikes: int | None = None) -> dict[str, int]:
    """Dense vs event-driven operations of one sequence ``(T, B, N)``.

    ``synops_dense`` = T B nnz would be a sparse matrix-vector product on every step;
    ``macs_dense`` = T B N^2 (dense matmul); ``synops_event`` = sum over spikes of the spiking
    neuron's fan-out (exact when ``spikes`` is the spike tensor, else mean fan-out x count).
    ``neuron_ops`` = T B N * 6 (decay, add input and recurrence, refractory test, compare,
    reset select, counter update: the update as coded).
    """
    t, b, n = (int(v) for v in shape_tbn)
    nnz = int(p.indices.numel())
    out = {"macs_dense": t * b * n * n, "synops_dense": t * b * nnz, "neuron_ops": t * b * n * 6,
           "neuron_updates": t * b * n}
    if spikes is not None:
        if isinstance(spikes, torch.Tensor):
            fan = (p.indptr[1:] - p.indptr[:-1]).to(spikes.device, torch.float64)
            per = spikes.detach().reshape(-1, n).to(torch.float64).sum(0)
            out["spikes"] = int(per.sum())
            out["synops_event"] = int((per * fan).sum())
        else:
            out["spikes"] = int(spikes)
            out["synops_event"] = round(int(spikes) * nnz / max(n, 1))
    return out


dispatch.register_fused("lsm", "cpu", "spiking.kernels.cpu.lsm:run")
dispatch.register_fused("lsm", "cuda", "spiking.kernels.cuda_lsm:run")
