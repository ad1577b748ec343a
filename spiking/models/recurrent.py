r"""Recurrent: a generic recurrent spiking layer (weights here, dynamics in a neuron).

Per time step t, for input ``x[t]`` ``[B, I]`` and the previous output spikes ``s[t-1]``
``[B, N]``:

.. code-block:: text

    u[t]           = W_in x[t] + b_in          (no input projection: u[t] = x[t], I = N)
                   + W_rec s[t-1] + b_rec       dense:      W_rec [N, N] (diagonal masked
                                                            to 0 with autapses=False)
                   + w_rec * s[t-1] + b_rec     one_to_one: w_rec [N] or a scalar
    s[t], n[t]     = neuron.step(u[t], n[t-1])

``s[-1] = 0`` and ``n[-1]`` is the neuron's rest state. The recurrent drive enters the neuron
exactly where its feed-forward input does: into the membrane for :class:`~spiking.LIF` (as
snnTorch ``RLeaky`` adds ``V(spk)`` to the input of the same step) and into the synaptic
current for :class:`~spiking.CubaLIF` / :class:`~spiking.ALIF` with ``tau_syn`` (as Norse's
``LIFRecurrent`` / ``LSNNRecurrent`` add ``W_rec z`` to the current jump). The spikes fed back
are not detached: gradients flow through the recurrence (BPTT, as in Bellec et al. 2018).

Contract: ``out, state = layer(x, state=None)`` with ``x`` ``[T, B, I]`` (``[B, T, I]`` with
``batch_first=True``), ``out`` the spikes ``[T, B, N]`` and ``state`` a
:class:`RecurrentState`; ``record=True`` also returns the neuron-state trajectory (the
neuron's State with fields stacked over time, ``[T, B, N]``, always time-first).
``layer.step(x_t, state)`` is one step and ``layer.cell()`` its module form.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from spiking.neurons.base import Cell

RECURRENCES = ("dense", "one_to_one")


class RecurrentState(NamedTuple):
    """State of :class:`Recurrent`: the neuron's state and the last output spikes ``[B, N]``."""

    neuron: Any
    spikes: torch.Tensor


def _stack_states(traj: list) -> Any:
    """Stack a list of (possibly nested) NamedTuple states over a new leading time dim."""
    first = traj[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(traj)
    if first is None:
        return None
    return type(first)(*[_stack_states([getattr(s, f) for s in traj]) for f in first._fields])


class Recurrent(nn.Module):
    __doc__ = __doc__

    stateful = True

    def __init__(self, neuron: nn.Module, hidden_size: int | None = None,
                 input_size: int | None = None, *, recurrent: str = "dense",
                 input_bias: bool = False, recurrent_bias: bool = False, autapses: bool = True,
                 batch_first: bool = False):
        super().__init__()
        if not (hasattr(neuron, "step") and hasattr(neuron, "initial_state")):
            raise ValueError(f"neuron must provide step() and initial_state() (a spiking neuron "
                             f"such as LIF, CubaLIF or ALIF), got {type(neuron).__name__}")
        if recurrent not in RECURRENCES:
            raise ValueError(f"recurrent must be one of {RECURRENCES}, got {recurrent!r}")
        for name, v in (("hidden_size", hidden_size), ("input_size", input_size)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if hidden_size is None and (input_size is not None or recurrent == "dense"):
            raise ValueError("hidden_size is required unless the layer has neither an input "
                             "projection (input_size=None) nor dense recurrence")
        self.neuron = neuron
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.recurrent_kind = recurrent
        self.autapses = bool(autapses)
        self.batch_first = bool(batch_first)
        self.input = None if input_size is None else nn.Linear(input_size, hidden_size,
                                                               bias=input_bias)
        self.recurrent_bias = None
        if recurrent == "dense":
            self.recurrent = nn.Linear(hidden_size, hidden_size, bias=recurrent_bias)
            if not self.autapses:
                self.register_buffer("_autapse_mask", 1.0 - torch.eye(hidden_size))
                with torch.no_grad():
                    self.recurrent.weight.mul_(self._autapse_mask)
        else:
            shape = () if hidden_size is None else (hidden_size,)
            # initialised to 1: snnTorch RLeaky's default one-to-one weight V = 1.0
            self.recurrent_weight = nn.Parameter(torch.ones(shape))
            if recurrent_bias:
                self.recurrent_bias = nn.Parameter(torch.zeros(shape))

    # -- state
    def _n(self, x_t: torch.Tensor) -> int:
        return self.hidden_size if self.hidden_size is not None else x_t.shape[-1]

    def initial_state(self, x_t: torch.Tensor) -> RecurrentState:
        """Rest state for one time step of input ``x_t`` ``[B, I]``: neuron at rest, no spikes."""
        h = x_t.new_zeros((*x_t.shape[:-1], self._n(x_t)))
        return RecurrentState(self.neuron.initial_state(h), h.clone())

    # -- one step
    def _check_step_input(self, x_t) -> None:
        expected = self.input_size if self.input is not None else self.hidden_size
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            raise ValueError(
                f"Recurrent.step expects one time step [B, features] (rank 2), got "
                f"{tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__}")
        if expected is not None and x_t.shape[-1] != expected:
            raise ValueError(f"Recurrent: input has {x_t.shape[-1]} features, expected "
                             f"{expected} ({'input_size' if self.input is not None else 'hidden_size'})")

    def recurrent_drive(self, spikes: torch.Tensor) -> torch.Tensor:
        """The recurrent input ``W_rec s + b_rec`` (or ``w_rec * s + b_rec``) for spikes ``[B, N]``."""
        if self.recurrent_kind == "dense":
            w = self.recurrent.weight
            if not self.autapses:
                w = w * self._autapse_mask
            return nn.functional.linear(spikes, w, self.recurrent.bias)
        out = spikes * self.recurrent_weight
        return out if self.recurrent_bias is None else out + self.recurrent_bias

    def step(self, x_t: torch.Tensor, state: RecurrentState | None = None):
        """One time step: ``(s[t], RecurrentState(n[t], s[t]))``."""
        self._check_step_input(x_t)
        if state is None:
            state = self.initial_state(x_t)
        elif not isinstance(state, RecurrentState):
            raise ValueError(f"state must be a RecurrentState, got {type(state).__name__}")
        u = self.input(x_t) if self.input is not None else x_t
        u = u + self.recurrent_drive(state.spikes)
        s, n = self.neuron.step(u, state.neuron)
        return s, RecurrentState(n, s)

    def cell(self) -> Cell:
        """Single-step module: ``out_t, state = cell(x_t, state=None)``."""
        return Cell(self)

    # -- sequence
    def forward(self, x: torch.Tensor, state: RecurrentState | None = None,
                record: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(
                f"Recurrent expects a sequence {'[B, T, I]' if self.batch_first else '[T, B, I]'}"
                f" (rank 3), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"Recurrent: input must be a floating tensor, got {x.dtype}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ValueError("Recurrent: input has no time steps (T = 0)")
        outs, traj = [], []
        for x_t in x.unbind(0):  # unbind, not x[t]: keeps the backward pass O(T)
            s, state = self.step(x_t, state)
            outs.append(s)
            if record:
                traj.append(state.neuron)
        out = torch.stack(outs)
        if self.batch_first:
            out = out.transpose(0, 1)
        if record:
            return out, state, _stack_states(traj)
        return out, state

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"recurrent={self.recurrent_kind!r}, autapses={self.autapses}, "
                f"batch_first={self.batch_first}")
