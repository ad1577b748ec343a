"""The one sequence wrapper shared by every neuron: validation, layout, dispatch, cell form."""

from __future__ import annotations

import warnings

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

    def __getattr__(self, name: str):
        # A learnable time constant is stored as log_<name> (see set_time_constant); reading
        # <name> gives it in seconds, differentiably.
        if name in TIME_CONSTANTS:
            p = self.__dict__["_parameters"].get(LOG + name)
            if p is not None:
                return p.exp()
        return super().__getattr__(name)

    def _init_time_constant(self, name: str, value, learn: bool, shape) -> None:
        """Validate a constructor's time constant (None: absent) and store it."""
        set_time_constant(self, name, None if value is None else time_constant(
            value, name, learn=learn, shape=shape, allow_inf=True), learn)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before time constants were learnt in log space hold a learnable
        # <name> in seconds; a fixed-tau model may also load a learnt log_<name>. Convert either
        # to this module's form. A non-positive tau in an old checkpoint becomes 1e-12 s, the
        # value the old code clamped it to, so the loaded model computes what it computed.
        for name in TIME_CONSTANTS:
            plain, log = prefix + name, prefix + LOG + name
            if LOG + name in self._parameters and plain in state_dict and log not in state_dict:
                old = state_dict.pop(plain)
                n_bad = int((old <= 0).sum())
                if n_bad:
                    warnings.warn(f"{prefix or type(self).__name__ + '.'}{name}: {n_bad} of "
                                  f"{old.numel()} time constants in the checkpoint are <= 0 "
                                  f"(trained before taus were kept positive); loaded as 1e-12 s "
                                  f"(no memory), as they ran before", stacklevel=2)
                state_dict[log] = old.clamp_min(1e-12).log()
            elif self._buffers.get(name) is not None and log in state_dict \
                    and plain not in state_dict:
                state_dict[plain] = state_dict.pop(log).exp().to(self._buffers[name].dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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


LOG = "log_"  # prefix of the Parameter holding the log of a learnable time constant
TIME_CONSTANTS = ("tau_mem", "tau_syn", "tau_adapt")


def _dtype(learn: bool) -> torch.dtype:
    # Fixed constants are kept in float64 (exactly what the user gave; cast to the input's
    # compute dtype when used), learnable ones in the default dtype, as optimisers expect.
    return torch.get_default_dtype() if learn else torch.float64


def time_constant(value, name: str, *, learn: bool, shape=None, allow_inf: bool = False):
    """A validated time constant (seconds) as a tensor: float64 when fixed, the default dtype
    when it is to be learnt (store it with :func:`set_time_constant`)."""
    t = torch.as_tensor(value, dtype=_dtype(learn)).clone()
    if shape is not None:
        t = t.expand(shape).clone() if t.dim() == 0 else t
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    common.check_positive(t, name, allow_inf=allow_inf)
    return t


def set_time_constant(module: nn.Module, name: str, value, learn: bool) -> None:
    """Store the time constant ``name`` (seconds, > 0, or None) on ``module``.

    Fixed: a buffer ``name`` holding the value exactly. Learnt: a Parameter ``log_<name>``
    holding its natural log; ``module.<name>`` then reads ``exp(log_<name>)``. The log keeps a
    trained time constant positive (a parameter in seconds crosses zero under ordinary optimiser
    steps: Adam moves every parameter by about ``lr`` per step, ~10 % of a 20 ms tau at lr 2e-3)
    and makes each step a relative change, the same for a 5 ms and a 500 ms constant.
    """
    for key in (name, LOG + name):
        module._parameters.pop(key, None)
        module._buffers.pop(key, None)
    if value is None or not learn:
        module.register_buffer(name, None if value is None else torch.as_tensor(value))
        return
    value = torch.as_tensor(value).detach()
    if not torch.isfinite(value).all() or (value <= 0).any():
        bad = value[~torch.isfinite(value) | (value <= 0)].flatten()[:3].tolist()
        raise ValueError(f"a learnable {name} must be finite and > 0 (it is learnt as its log), "
                         f"got {bad}; pass learn_tau=False for a fixed (possibly infinite) one")
    module.register_parameter(LOG + name, nn.Parameter(value.log()))


def finite_param(value, name: str, *, learn: bool, shape=None):
    t = torch.as_tensor(value, dtype=_dtype(learn)).clone()
    if shape is not None and t.dim() == 0:
        t = t.expand(shape).clone()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return nn.Parameter(t) if learn else t
