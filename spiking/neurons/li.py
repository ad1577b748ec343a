"""LI: leaky-integrator readout (no spikes); the math is in spiking.kernels.li."""

from __future__ import annotations

from spiking.kernels import common
from spiking.kernels import li as K
from spiking.neurons.base import Neuron, finite_param
from spiking.neurons.lif import compute_dtype


class LI(Neuron):
    """Leaky integrator: ``out, state = LI(tau_mem=10e-3)(x)``; out is the membrane [T, B, N].

    ``tau_syn`` adds a synaptic current (Norse's ``LI``); ``normalize_input`` scales the drive
    by ``1 - alpha_mem``; ``discretization`` ``exp`` or ``euler``.
    """

    kernel = K

    def __init__(self, tau_mem=10e-3, dt=1e-3, *, tau_syn=None, v_leak=0.0,
                 normalize_input=False, discretization="exp", learn_tau=False, n_neurons=None,
                 batch_first=False, backend="auto", check_finite=False):
        super().__init__(dt, batch_first=batch_first, backend=backend, check_finite=check_finite)
        if discretization not in common.DISCRETIZATIONS:
            raise ValueError(
                f"discretization must be one of {common.DISCRETIZATIONS}, got {discretization!r}")
        shape = None if n_neurons is None else (int(n_neurons),)
        self.discretization = discretization
        self.normalize_input = bool(normalize_input)
        for name, val in (("tau_mem", tau_mem), ("tau_syn", tau_syn)):
            self._init_time_constant(name, val, learn_tau, shape)
        self.register_buffer("v_leak", finite_param(v_leak, "v_leak", learn=False))

    def params(self, x) -> K.LIParams:
        dt = compute_dtype(x)
        a_mem = common.decay(self.dt, self.tau_mem.to(dt).clamp_min(1e-12), self.discretization)
        a_syn = None if self.tau_syn is None else common.decay(
            self.dt, self.tau_syn.to(dt).clamp_min(1e-12), self.discretization)
        return K.LIParams(a_mem, a_syn, (1 - a_mem) if self.normalize_input else 1.0,
                          self.v_leak.to(dt))
