"""LIF, CubaLIF and ALIF neurons: parameters in seconds; the math is in spiking.kernels.lif."""

from __future__ import annotations

import math

import torch

from spiking import surrogate as _surrogate
from spiking.kernels import common
from spiking.kernels import lif as K
from spiking.neurons.base import Neuron, finite_param

# Defaults: dt = 1 ms, tau_mem = 10 ms, tau_syn = 5 ms are Norse's LIFParameters defaults
# (norse/torch/functional/lif.py: tau_mem_inv = 1/1e-2, tau_syn_inv = 1/5e-3, v_th = 1).
# ALIF: tau_adapt = 200 ms and jump 1.8 follow Bellec et al. 2018 (LSNN, NeurIPS; beta = 1.8
# is also Norse's LSNNParameters.beta default).


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Parameters are evaluated in float64 for float64 inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _LIFBase(Neuron):
    kernel = K

    def __init__(self, *, tau_mem, threshold, tau_syn, tau_adapt, adapt_jump, dt, reset,
                 v_leak, v_reset, reset_delay, current_first, normalize_input, discretization,
                 learn_tau, learn_threshold, n_neurons, surrogate, surrogate_alpha,
                 batch_first, backend, check_finite):
        super().__init__(dt, batch_first=batch_first, backend=backend, check_finite=check_finite)
        if reset not in K.RESETS:
            raise ValueError(f"reset must be one of {K.RESETS}, got {reset!r}")
        if discretization not in common.DISCRETIZATIONS:
            raise ValueError(
                f"discretization must be one of {common.DISCRETIZATIONS}, got {discretization!r}")
        if reset_delay and tau_adapt is not None:
            raise ValueError("reset_delay=True is not defined for ALIF (adaptive threshold)")
        shape = None if n_neurons is None else (int(n_neurons),)
        if shape is not None and shape[0] < 1:
            raise ValueError(f"n_neurons must be >= 1, got {n_neurons!r}")
        self.reset = reset
        self.reset_delay = bool(reset_delay)
        self.current_first = bool(current_first)
        self.normalize_input = bool(normalize_input)
        self.discretization = discretization
        self.surrogate = _surrogate.get(surrogate, surrogate_alpha)
        # registration order = parameter order (optimizer state is matched by position)
        self._init_time_constant("tau_mem", tau_mem, learn_tau, shape)
        self._set("threshold", finite_param(threshold, "threshold", learn=learn_threshold,
                                            shape=shape))
        self._init_time_constant("tau_syn", tau_syn, learn_tau, shape)
        self._init_time_constant("tau_adapt", tau_adapt, learn_tau, shape)
        self._set("adapt_jump", None if tau_adapt is None else finite_param(
            adapt_jump, "adapt_jump", learn=False, shape=shape))
        self._set("v_leak", finite_param(v_leak, "v_leak", learn=False))
        self._set("v_reset", finite_param(v_reset, "v_reset", learn=False))

    def _set(self, name, value):
        if isinstance(value, torch.nn.Parameter):
            self.register_parameter(name, value)
        else:
            self.register_buffer(name, value)

    def _decay(self, tau, dtype):
        if tau is None:
            return None
        return common.decay(self.dt, tau.to(dtype).clamp_min(1e-12), self.discretization)

    def params(self, x: torch.Tensor) -> K.LIFParams:
        dt = compute_dtype(x)
        a_mem = self._decay(self.tau_mem, dt)
        return K.LIFParams(
            alpha_mem=a_mem,
            threshold=self.threshold.to(dt),
            alpha_syn=self._decay(self.tau_syn, dt),
            alpha_adapt=self._decay(self.tau_adapt, dt),
            adapt_jump=0.0 if self.adapt_jump is None else self.adapt_jump.to(dt),
            gain=(1 - a_mem) if self.normalize_input else 1.0,
            v_leak=self.v_leak.to(dt),
            v_reset=self.v_reset.to(dt),
            reset=self.reset,
            reset_delay=self.reset_delay,
            current_first=self.current_first,
            surrogate=self.surrogate,
        )

    def extra_repr(self) -> str:
        def show(t):
            if t is None:
                return None
            return f"{t.item():.4g}" if t.numel() == 1 else f"[{t.numel()}]"
        parts = [f"tau_mem={show(self.tau_mem)}"]
        if self.tau_syn is not None:
            parts.append(f"tau_syn={show(self.tau_syn)}")
        if self.tau_adapt is not None:
            parts.append(f"tau_adapt={show(self.tau_adapt)}, adapt_jump={show(self.adapt_jump)}")
        parts += [f"threshold={show(self.threshold)}", f"dt={self.dt:g}", f"reset={self.reset!r}",
                  f"surrogate={self.surrogate.name}({self.surrogate.alpha:g})",
                  f"backend={self.backend!r}"]
        return ", ".join(parts)


_COMMON_DOC = """
    Common arguments: ``dt`` (s); ``reset`` in ``subtract | zero | none`` (zero resets to
    ``v_reset``); ``learn_tau`` / ``learn_threshold`` make them Parameters (per neuron when
    ``n_neurons`` is given); ``surrogate`` (name or Surrogate) and ``surrogate_alpha``
    (sharpness); ``discretization`` ``exp`` (default) or ``euler``; ``normalize_input``
    scales the drive by ``1 - alpha_mem``; ``reset_delay`` applies a spike's reset one step
    later (snnTorch's convention); ``batch_first``; ``backend`` ``auto|reference|cpu|cuda``;
    ``check_finite`` rejects NaN/inf inputs. The update is documented in
    :mod:`spiking.kernels.lif`.
"""


class LIF(_LIFBase):
    __doc__ = ("Leaky integrate-and-fire neuron (no synaptic current).\n\n"
               "``out, state = LIF(tau_mem=10e-3)(x)`` with ``x`` ``[T, B, N]``: spikes and "
               "final LIFState(v).\n" + _COMMON_DOC)

    def __init__(self, tau_mem=10e-3, threshold=1.0, dt=1e-3, *, reset="subtract", v_leak=0.0,
                 v_reset=0.0, reset_delay=False, normalize_input=False, discretization="exp",
                 learn_tau=False, learn_threshold=False, n_neurons=None, surrogate="atan",
                 surrogate_alpha=None, batch_first=False, backend="auto", check_finite=False):
        super().__init__(
            tau_mem=tau_mem, threshold=threshold, tau_syn=None, tau_adapt=None, adapt_jump=0.0,
            dt=dt, reset=reset, v_leak=v_leak, v_reset=v_reset, reset_delay=reset_delay,
            current_first=True, normalize_input=normalize_input, discretization=discretization,
            learn_tau=learn_tau, learn_threshold=learn_threshold, n_neurons=n_neurons,
            surrogate=surrogate, surrogate_alpha=surrogate_alpha, batch_first=batch_first,
            backend=backend, check_finite=check_finite)


class CubaLIF(_LIFBase):
    __doc__ = ("Current-based LIF: a leaky synaptic current drives a LIF membrane.\n\n"
               "``current_first=True`` integrates this step's current (snnTorch ``Synaptic``, "
               "Norse ``LIF``);\nFalse the previous step's (explicit Euler of the coupled ODE, "
               "Norse ``LSNN``).\n" + _COMMON_DOC)

    def __init__(self, tau_mem=10e-3, tau_syn=5e-3, threshold=1.0, dt=1e-3, *,
                 reset="subtract", v_leak=0.0, v_reset=0.0, reset_delay=False,
                 current_first=True, normalize_input=False, discretization="exp",
                 learn_tau=False, learn_threshold=False, n_neurons=None, surrogate="atan",
                 surrogate_alpha=None, batch_first=False, backend="auto", check_finite=False):
        super().__init__(
            tau_mem=tau_mem, threshold=threshold, tau_syn=tau_syn, tau_adapt=None,
            adapt_jump=0.0, dt=dt, reset=reset, v_leak=v_leak, v_reset=v_reset,
            reset_delay=reset_delay, current_first=current_first,
            normalize_input=normalize_input, discretization=discretization, learn_tau=learn_tau,
            learn_threshold=learn_threshold, n_neurons=n_neurons, surrogate=surrogate,
            surrogate_alpha=surrogate_alpha, batch_first=batch_first, backend=backend,
            check_finite=check_finite)


class ALIF(_LIFBase):
    __doc__ = ("Adaptive LIF (LSNN, Bellec et al. 2018): each spike raises the threshold by "
               "``adapt_jump``;\nthe raise decays with ``tau_adapt``. ``tau_syn=None`` (default) "
               "drives the membrane directly;\na value adds a synaptic current as in Norse "
               "``LSNN``.\n" + _COMMON_DOC)

    def __init__(self, tau_mem=20e-3, tau_adapt=200e-3, adapt_jump=1.8, threshold=1.0,
                 dt=1e-3, *, tau_syn=None, reset="subtract", v_leak=0.0, v_reset=0.0,
                 current_first=True, normalize_input=False, discretization="exp",
                 learn_tau=False, learn_threshold=False, n_neurons=None, surrogate="atan",
                 surrogate_alpha=None, batch_first=False, backend="auto", check_finite=False):
        if not math.isfinite(float(torch.as_tensor(adapt_jump).max())):
            raise ValueError(f"adapt_jump must be finite, got {adapt_jump!r}")
        super().__init__(
            tau_mem=tau_mem, threshold=threshold, tau_syn=tau_syn, tau_adapt=tau_adapt,
            adapt_jump=adapt_jump, dt=dt, reset=reset, v_leak=v_leak, v_reset=v_reset,
            reset_delay=False, current_first=current_first, normalize_input=normalize_input,
            discretization=discretization, learn_tau=learn_tau,
            learn_threshold=learn_threshold, n_neurons=n_neurons, surrogate=surrogate,
            surrogate_alpha=surrogate_alpha, batch_first=batch_first, backend=backend,
            check_finite=check_finite)
