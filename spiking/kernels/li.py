r"""LI: leaky integrator (non-spiking readout), optionally with a synaptic current.

Per time step t (shapes ``[B, N, ...]``):

.. code-block:: text

    i[t] = alpha_syn * i[t-1] + x[t]          (with a synapse; else i = None, drive = x[t])
    drive = i[t]
    v[t] = alpha_mem * v[t-1] + (1 - alpha_mem) * v_leak + gain * drive
    out[t] = v[t]

Decays from :func:`spiking.kernels.common.decay`; ``gain`` is 1 or ``1 - alpha_mem``
(``normalize_input``, Norse's ``LI`` form). The output is the membrane itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiking.kernels import dispatch


class LIParams(NamedTuple):
    alpha_mem: torch.Tensor
    alpha_syn: torch.Tensor | None = None
    gain: torch.Tensor | float = 1.0
    v_leak: torch.Tensor | float = 0.0


class LIState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor | None = None


def initial_state(x_t: torch.Tensor, p: LIParams) -> LIState:
    return LIState(torch.zeros_like(x_t) + p.v_leak,
                   torch.zeros_like(x_t) if p.alpha_syn is not None else None)


def step(x_t: torch.Tensor, state: LIState, p: LIParams):
    if p.alpha_syn is not None:
        i = p.alpha_syn * state.i + x_t
        drive = i
    else:
        i, drive = None, x_t
    v = p.alpha_mem * state.v + (1 - p.alpha_mem) * p.v_leak + p.gain * drive
    return v, LIState(v, i)


def reference(x: torch.Tensor, state: LIState, p: LIParams, record: bool = False):
    outs, traj = [], []
    for x_t in x.unbind(0):  # unbind, not x[t]: keeps the backward pass O(T)
        v, state = step(x_t, state, p)
        outs.append(v)
        if record:
            traj.append(state)
    out = torch.stack(outs) if outs else x.new_zeros(x.shape)
    if not record:
        return out, state
    return out, state, LIState(out, torch.stack([s.i for s in traj])
                               if traj and traj[0].i is not None else None)


def run(x, state, p: LIParams, backend: str = "auto", record: bool = False):
    name, fn = dispatch.select("li", backend, x, reference)
    if name == "reference" and x.dtype in (torch.float16, torch.bfloat16):
        from spiking.kernels.lif import reference_float32
        return reference_float32(fn, x, state, p, record)
    return fn(x, state, p, record=record)


def op_counts(shape_bt_n, p: LIParams) -> dict[str, int]:
    t, b, n = shape_bt_n
    per = 3 + (2 if p.alpha_syn is not None else 0)
    return {"membrane_updates": t * b * n, "neuron_ops": t * b * n * per, "spikes": 0}


dispatch.register_fused("li", "cpu", "spiking.kernels.cpu.li:run")
dispatch.register_fused("li", "cuda", "spiking.kernels.cuda_lif:run_li")
