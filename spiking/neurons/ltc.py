"""LTC and CfC: liquid time-constant neurons; the math is in spiking.kernels.ltc / .cfc.

Exception to "neurons hold no weights": the synapses of an LTC (sensory and recurrent
``w, sigma, mu, erev``) and the backbone/heads of a CfC are part of the ODE that defines the
neuron (its time constant depends on them), so these modules own them as parameters. A
model may still put an ``nn.Linear`` in front.

Time is in seconds. ncps measures time in steps (elapsed time 1 per regular step); the
defaults here are scaled so that a regular step of ``dt`` seconds behaves as an ncps step:
LTC capacitances are initialised in ncps' range times ``dt`` (so ``tau = cm / gleak`` is in
seconds), and CfC's ``time_scale`` defaults to ``dt``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from spiking.kernels import cfc as KC
from spiking.kernels import common
from spiking.kernels import ltc as KL
from spiking.neurons.base import Cell, Neuron
from spiking.neurons.lif import compute_dtype

# Init ranges of ncps' LTCCell (ncps/torch/ltc_cell.py, `_init_ranges`); cm is multiplied by dt.
LTC_INIT = {"gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6), "w": (0.001, 1.0),
            "sigma": (3.0, 8.0), "mu": (0.3, 0.8), "sensory_w": (0.001, 1.0),
            "sensory_sigma": (3.0, 8.0), "sensory_mu": (0.3, 0.8)}
MAPPINGS = ("affine", "linear", None)


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """The raw value whose softplus is ``y`` (> 0)."""
    return y + torch.log(-torch.expm1(-y))


def _uniform(shape, lo, hi):
    return torch.rand(*shape) * (hi - lo) + lo


class _TimedCell(Cell):
    """Single-step form: ``out_t, state = cell(x_t, state=None, timespan=None)``."""

    def forward(self, x_t: torch.Tensor, state=None, timespan=None):
        return self.neuron.step(x_t, state, timespan=timespan)


class _LiquidBase(Neuron):
    """Shared sequence/step logic with optional irregular ``timespans``."""

    in_features: int
    units: int

    def _check_input(self, x: torch.Tensor, where: str) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}{where}: input has {x.shape[-1]} features "
                             f"(last dim of shape {tuple(x.shape)}), expected {self.in_features}")

    def _check_state(self, state, x_t: torch.Tensor):
        want = (x_t.shape[0], self.units)
        cls = KL.LTCState if self.kernel is KL else KC.CfCState
        s = state[0] if isinstance(state, tuple) and len(state) == 1 else None
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != want:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else repr(state)[:60]
            raise ValueError(f"{type(self).__name__}: state must be {cls.__name__} with a "
                             f"{list(want)} tensor ([B, units]), got {got}")
        return cls(s)

    def _timespans(self, ts, t: int, b: int, x: torch.Tensor):
        if ts is None:
            return None
        if not isinstance(ts, torch.Tensor):
            ts = torch.as_tensor(ts, dtype=torch.float64)
        ts = ts.to(x.device)
        if ts.dim() == 2 and self.batch_first:
            ts = ts.transpose(0, 1)
        if not ((ts.dim() == 1 and ts.shape[0] == t) or (ts.dim() == 2 and ts.shape == (t, b))):
            layout = "[B, T]" if self.batch_first else "[T, B]"
            raise ValueError(f"timespans has shape {tuple(ts.shape)}, expected [T] = [{t}] or "
                             f"{layout} (seconds per step)")
        common.check_positive(ts.to(torch.float64), "timespans")
        return ts.to(compute_dtype(x))

    def forward(self, x: torch.Tensor, state=None, record: bool = False, timespans=None):
        """``out, state = m(x, state=None, timespans=None)``; x ``[T, B, N_in]``.

        ``timespans``: elapsed seconds per step, ``[T]`` or ``[T, B]`` (``[B, T]`` with
        ``batch_first``); None: every step lasts ``dt``.
        """
        common.check_sequence(x, "input", min_rank=3, check_finite=self.check_finite)
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__}: input must be [T, B, N_in] (rank 3), got "
                             f"shape {tuple(x.shape)}")
        self._check_input(x, "")
        if self.batch_first:
            x = x.transpose(0, 1)
        ts = self._timespans(timespans, x.shape[0], x.shape[1], x)
        p = self.params(x)
        if state is None:
            state = self.kernel.initial_state(x[0] if len(x) else x.new_zeros(x.shape[1:]), p)
        else:
            state = self._check_state(state, x[0] if len(x) else x.new_zeros(x.shape[1:]))
        res = self.kernel.run(x, state, p, backend=self.backend, record=record, timespans=ts)
        out = res[0].transpose(0, 1) if self.batch_first else res[0]
        return (out, *res[1:])

    def step(self, x_t: torch.Tensor, state=None, timespan=None):
        """One step: ``out_t, state = m.step(x_t [B, N_in], state=None, timespan=None)``.

        ``timespan``: elapsed seconds, a float or ``[B]``; None: ``dt``.
        """
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            raise ValueError(
                f"{type(self).__name__}.step expects one time step [B, N_in] (rank 2), got "
                f"{tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__}")
        self._check_input(x_t, ".step")
        if self.check_finite and not torch.isfinite(x_t).all():
            raise ValueError(f"{type(self).__name__}.step: input holds non-finite values "
                             "(check_finite=True)")
        if timespan is not None:
            ts = timespan if isinstance(timespan, torch.Tensor) else torch.as_tensor(
                timespan, dtype=torch.float64)
            ts = ts.to(x_t.device)
            if ts.dim() > 1 or (ts.dim() == 1 and ts.shape[0] != x_t.shape[0]):
                raise ValueError(f"timespan has shape {tuple(ts.shape)}, expected a scalar or "
                                 f"[B] = [{x_t.shape[0]}] (seconds)")
            common.check_positive(ts.to(torch.float64), "timespan")
            timespan = ts.to(compute_dtype(x_t))
        p = self.params(x_t)
        if state is None:
            state = self.kernel.initial_state(x_t, p)
        else:
            state = self._check_state(state, x_t)
        return self.kernel.step(x_t, state, p, timespan)

    def cell(self) -> Cell:
        return _TimedCell(self)


def _sizes(in_features, units):
    for name, v in (("in_features", in_features), ("units", units)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


class LTC(_LiquidBase):
    """Liquid time-constant layer (Hasani et al., AAAI 2021), ncps' LTCCell formulation.

    ``out, state = LTC(in_features, units)(x)`` with ``x`` ``[T, B, in_features]``: motor
    outputs ``[T, B, out_features]`` and final LTCState(v ``[B, units]``). Positive quantities
    (``cm, gleak, w, sensory_w``) are ``softplus`` of the raw parameters ``*_raw``;
    ``cm`` is in conductance x seconds so ``tau = cm / gleak`` (property ``tau``) is seconds.
    Init: ncps ranges (``cm`` times ``dt``), reversal potentials +-1 with P(-1) = 1/3 as ncps'
    FullyConnected wiring. ``sparsity_mask`` ``[units, units]`` / ``sensory_sparsity_mask``
    ``[in_features, units]`` (|values| used) remove synapses. ``input_mapping`` /
    ``output_mapping`` in ``affine | linear | None``. The update is in
    :mod:`spiking.kernels.ltc`.
    """

    kernel = KL

    def __init__(self, in_features: int, units: int, dt: float = 1e-3, *,
                 out_features: int | None = None, ode_unfolds: int = KL.DEFAULT_UNFOLDS,
                 eps: float = KL.DEFAULT_EPS, input_mapping="affine", output_mapping="affine",
                 sparsity_mask=None, sensory_sparsity_mask=None, batch_first=False,
                 backend="auto", check_finite=False):
        super().__init__(dt, batch_first=batch_first, backend=backend, check_finite=check_finite)
        _sizes(in_features, units)
        if out_features is not None and not (isinstance(out_features, int)
                                             and 1 <= out_features <= units):
            raise ValueError(f"out_features must be an int in [1, units={units}], "
                             f"got {out_features!r}")
        if not isinstance(ode_unfolds, int) or ode_unfolds < 1:
            raise ValueError(f"ode_unfolds must be an int >= 1, got {ode_unfolds!r}")
        if not (math.isfinite(float(eps)) and float(eps) >= 0):
            raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
        for name, m in (("input_mapping", input_mapping), ("output_mapping", output_mapping)):
            if m not in MAPPINGS:
                raise ValueError(f"{name} must be one of {MAPPINGS}, got {m!r}")
        self.in_features, self.units = in_features, units
        self.out_features = units if out_features is None else out_features
        self.ode_unfolds, self.eps = ode_unfolds, float(eps)
        self.input_mapping, self.output_mapping = input_mapping, output_mapping
        n_in, n = in_features, units
        r = LTC_INIT
        self.cm_raw = nn.Parameter(inv_softplus(_uniform((n,), *r["cm"]) * self.dt))
        self.gleak_raw = nn.Parameter(inv_softplus(_uniform((n,), *r["gleak"])))
        self.vleak = nn.Parameter(_uniform((n,), *r["vleak"]))
        self.w_raw = nn.Parameter(inv_softplus(_uniform((n, n), *r["w"])))
        self.sigma = nn.Parameter(_uniform((n, n), *r["sigma"]))
        self.mu = nn.Parameter(_uniform((n, n), *r["mu"]))
        self.erev = nn.Parameter(torch.where(torch.rand(n, n) < 1 / 3, -1.0, 1.0))
        self.sensory_w_raw = nn.Parameter(inv_softplus(_uniform((n_in, n), *r["sensory_w"])))
        self.sensory_sigma = nn.Parameter(_uniform((n_in, n), *r["sensory_sigma"]))
        self.sensory_mu = nn.Parameter(_uniform((n_in, n), *r["sensory_mu"]))
        self.sensory_erev = nn.Parameter(torch.where(torch.rand(n_in, n) < 1 / 3, -1.0, 1.0))
        self.input_w = nn.Parameter(torch.ones(n_in)) if input_mapping else None
        self.input_b = nn.Parameter(torch.zeros(n_in)) if input_mapping == "affine" else None
        m = self.out_features
        self.output_w = nn.Parameter(torch.ones(m)) if output_mapping else None
        self.output_b = nn.Parameter(torch.zeros(m)) if output_mapping == "affine" else None
        self.register_buffer("sparsity_mask", self._mask(sparsity_mask, (n, n), "sparsity_mask"))
        self.register_buffer("sensory_sparsity_mask", self._mask(
            sensory_sparsity_mask, (n_in, n), "sensory_sparsity_mask"))

    @staticmethod
    def _mask(mask, shape, name):
        if mask is None:
            return None
        t = torch.as_tensor(mask, dtype=torch.get_default_dtype()).abs()
        if tuple(t.shape) != shape or not torch.isfinite(t).all():
            raise ValueError(f"{name} must be a finite {list(shape)} array, got shape "
                             f"{tuple(t.shape)}")
        return t

    @property
    def tau(self) -> torch.Tensor:
        """Leak time constants ``cm / gleak`` (seconds), ``[units]``, detached."""
        f = nn.functional.softplus
        return (f(self.cm_raw) / f(self.gleak_raw)).detach()

    def params(self, x: torch.Tensor) -> KL.LTCParams:
        d = compute_dtype(x)
        sp = nn.functional.softplus

        def cast(t):
            return None if t is None else t.to(d)

        w, ws = sp(self.w_raw.to(d)), sp(self.sensory_w_raw.to(d))
        if self.sparsity_mask is not None:
            w = w * self.sparsity_mask.to(d)
        if self.sensory_sparsity_mask is not None:
            ws = ws * self.sensory_sparsity_mask.to(d)
        return KL.LTCParams(
            sensory_w=ws, sensory_sigma=cast(self.sensory_sigma), sensory_mu=cast(self.sensory_mu),
            sensory_erev=cast(self.sensory_erev), w=w, sigma=cast(self.sigma), mu=cast(self.mu),
            erev=cast(self.erev), cm=sp(self.cm_raw.to(d)), gleak=sp(self.gleak_raw.to(d)),
            vleak=cast(self.vleak), dt=self.dt, ode_unfolds=self.ode_unfolds, eps=self.eps,
            input_w=cast(self.input_w), input_b=cast(self.input_b),
            output_w=cast(self.output_w), output_b=cast(self.output_b),
            out_features=None if self.out_features == self.units else self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, units={self.units}, "
                f"out_features={self.out_features}, dt={self.dt:g}, "
                f"ode_unfolds={self.ode_unfolds}, backend={self.backend!r}")


class CfC(_LiquidBase):
    """Closed-form continuous-time layer (Hasani et al., Nat. Mach. Intell. 2022), ncps' CfCCell.

    ``out, state = CfC(in_features, units)(x)`` with ``x`` ``[T, B, in_features]``: hidden
    states ``[T, B, units]`` and final CfCState(h ``[B, units]``). ``mode`` in
    ``default | no_gate | pure``; backbone MLP of ``backbone_layers`` layers of
    ``backbone_units`` with ``activation`` (``lecun_tanh`` default); ``time_scale`` (s, default
    ``dt``) is the time unit of the gate. Init as ncps: Xavier-uniform weights, PyTorch's default
    biases, ``A = 1`` and ``w_tau = 0`` (pure). The update is in :mod:`spiking.kernels.cfc`.
    """

    kernel = KC

    def __init__(self, in_features: int, units: int, dt: float = 1e-3, *, mode="default",
                 backbone_units: int = 128, backbone_layers: int = 1, activation="lecun_tanh",
                 time_scale: float | None = None, batch_first=False, backend="auto",
                 check_finite=False):
        super().__init__(dt, batch_first=batch_first, backend=backend, check_finite=check_finite)
        _sizes(in_features, units)
        if mode not in KC.MODES:
            raise ValueError(f"mode must be one of {KC.MODES}, got {mode!r}")
        if activation not in KC.ACTIVATIONS:
            raise ValueError(f"activation must be one of {KC.ACTIVATIONS}, got {activation!r}")
        if not isinstance(backbone_layers, int) or backbone_layers < 0:
            raise ValueError(f"backbone_layers must be an int >= 0, got {backbone_layers!r}")
        if backbone_layers and (not isinstance(backbone_units, int) or backbone_units < 1):
            raise ValueError(f"backbone_units must be an int >= 1, got {backbone_units!r}")
        ts = self.dt if time_scale is None else time_scale
        common.check_positive(ts, "time_scale")
        self.time_scale = float(ts)
        self.in_features, self.units = in_features, units
        self.mode, self.activation = mode, activation
        sizes = [in_features + units] + [backbone_units] * backbone_layers
        self.backbone = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        nz = sizes[-1]
        self.f = nn.Linear(nz, units)
        if mode == "pure":
            self.A = nn.Parameter(torch.ones(units))
            self.w_tau = nn.Parameter(torch.zeros(units))
            self.g = self.h = self.tb = None
        else:
            self.g, self.h, self.tb = nn.Linear(nz, units), nn.Linear(nz, units), nn.Linear(nz,
                                                                                           units)
            self.A = self.w_tau = None
        for prm in self.parameters():
            if prm.dim() == 2:
                nn.init.xavier_uniform_(prm)

    def params(self, x: torch.Tensor) -> KC.CfCParams:
        d = compute_dtype(x)

        def lin(m):
            return None if m is None else (m.weight.to(d), m.bias.to(d))

        return KC.CfCParams(
            backbone=tuple(lin(m) for m in self.backbone), f=lin(self.f), g=lin(self.g),
            h=lin(self.h), tb=lin(self.tb),
            A=None if self.A is None else self.A.to(d),
            w_tau=None if self.w_tau is None else self.w_tau.to(d),
            mode=self.mode, activation=self.activation, dt=self.dt, time_scale=self.time_scale)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, units={self.units}, mode={self.mode!r}, "
                f"dt={self.dt:g}, time_scale={self.time_scale:g}, backend={self.backend!r}")
