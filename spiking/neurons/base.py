"""The one sequence wrapper shared by every neuron: validation, layout, dispatch, cell form."""

from __future__ import annotations

import torch
from torch import nn

from spiking.kernels import common
from spiking.kernels.dispatch import BACKENDS


class Neuron(nn.Module):
    """Base of every neuron model.

    Subclasses set ``kernel`` (a module of :mod:`spiking.kernels` with ``initial_state``,
    ``step`` and ``run``) and implement ``params(x)``, returning the kernel's Params for
    inputs like ``x``. Then

    - ``out, state = m(x, state=None)`` runs a whole sequence ``x`` ``[T, B, ...]``
      (``[B, T, ...]`` with ``batch_first=True``) on the chosen backend;
    - ``out, state, trajectory = m(x, state, record=True)`` also returns every state variable
      over time (a State of ``[T, B, ...]`` tensors, time-first regardless of ``batch_first``);
    - ``out_t, state = m.step(x_t, state=None)`` is the single-step cell; ``m.cell()`` wraps
      it as an ``nn.Module`` sharing the parameters.
    """

    kernel = None  # set by subclasses

    def __init__(self, dt: float = 1e-3, *, batch_first: bool = False, backend: str = "auto",
                 check_finite: bool = False):
        super().__init__()
        self.dt = common.check_dt(dt)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.check_finite = bool(check_finite)

    # -- to be provided by subclasses
    def params(self, x: torch.Tensor):
        raise NotImplementedError

    def initial_state(self, x_t: torch.Tensor):
        """The rest state for one time step of input shaped like `x_t` ``[B, ...]``."""
        return self.kernel.initial_state(x_t, self.params(x_t))

    def _check_state(self, state, x_t: torch.Tensor):
        for name, s in zip(state._fields, state):
            if s is not None and s.shape != x_t.shape:
                raise ValueError(
                    f"{type(self).__name__}: state.{name} has shape {tuple(s.shape)}, expected "
                    f"{tuple(x_t.shape)} (one time step of the input)")

    def forward(self, x: torch.Tensor, state=None, record: bool = False):
        common.check_sequence(x, "input", min_rank=3, check_finite=self.check_finite)
        if self.batch_first:
            x = x.transpose(0, 1)
        p = self.params(x)
        x0 = x[0] if x.shape[0] > 0 else x.new_zeros(x.shape[1:])
        if state is None:
            state = self.kernel.initial_state(x0, p)
        else:
            self._check_state(state, x0)
        res = self.kernel.run(x, state, p, backend=self.backend, record=record)
        out = res[0].transpose(0, 1) if self.batch_first else res[0]
        return (out, *res[1:])

    def step(self, x_t: torch.Tensor, state=None):
        if not isinstance(x_t, torch.Tensor) or x_t.dim() < 2:
            raise ValueError(
                f"{type(self).__name__}.step expects one time step [B, N, ...] (rank >= 2), got "
                f"{tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__}")
        if self.check_finite and not torch.isfinite(x_t).all():
            raise ValueError(f"{type(self).__name__}.step: input holds non-finite values")
        p = self.params(x_t)
        if state is None:
            state = self.kernel.initial_state(x_t, p)
        else:
            self._check_state(state, x_t)
        return self.kernel.step(x_t, state, p)

    def cell(self) -> "Cell":
        return Cell(self)


class Cell(nn.Module):
    """Single-step form of a neuron: ``out_t, state = cell(x_t, state=None)``."""

    def __init__(self, neuron: Neuron):
        super().__init__()
        self.neuron = neuron

    def forward(self, x_t: torch.Tensor, state=None):
        return self.neuron.step(x_t, state)


def _dtype(learn: bool) -> torch.dtype:
    # Fixed constants are kept in float64 (exactly what the user gave; cast to the input's
    # compute dtype when used), learnable ones in the default dtype, as optimisers expect.
    return torch.get_default_dtype() if learn else torch.float64


def time_constant(value, name: str, *, learn: bool, shape=None, allow_inf: bool = False):
    """A validated time constant (seconds) as a Parameter (learn=True) or a buffer tensor."""
    t = torch.as_tensor(value, dtype=_dtype(learn)).clone()
    if shape is not None:
        t = t.expand(shape).clone() if t.dim() == 0 else t
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    common.check_positive(t, name, allow_inf=allow_inf)
    return nn.Parameter(t) if learn else t


def finite_param(value, name: str, *, learn: bool, shape=None):
    t = torch.as_tensor(value, dtype=_dtype(learn)).clone()
    if shape is not None and t.dim() == 0:
        t = t.expand(shape).clone()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return nn.Parameter(t) if learn else t
