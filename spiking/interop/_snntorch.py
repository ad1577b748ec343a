"""snnTorch -> spiking: ``Leaky``, ``Synaptic``, ``RLeaky`` and ``nn.Sequential`` stacks.

snnTorch 1.0 (``snntorch/_neurons/leaky.py``, ``synaptic.py``, ``rleaky.py``) updates, per
step, with ``r = H(mem[t-1] - thr)`` detached (``H(x) = x > 0``):

.. code-block:: text

    Leaky     mem = beta*mem + x - r*thr          (subtract)
              mem = beta*(1 - r)*mem + x          (zero)
    Synaptic  syn = alpha*syn + x;  mem = beta*mem + syn - r*thr
    RLeaky    mem = beta*mem + x + V(spk[t-1]) - r*thr
    spk = H(mem - thr); the returned mem is this (pre-reset) value  (reset_delay=True)

``beta``/``alpha`` are clamped to [0, 1]. This is :class:`~spiking.LIF` /
:class:`~spiking.CubaLIF` with ``reset_delay=True`` and ``tau = -dt / log(beta)``
(:func:`spiking.kernels.common.tau_from_decay`).

Mapped exactly only where the two agree; otherwise ValueError:

- ``reset_delay=False`` with ``subtract``: snnTorch subtracts ``(spk - r) * thr`` while the
  spike is decided on ``mem - r*thr``; no spiking option reproduces it.
- ``Synaptic`` / ``RLeaky`` with ``reset_mechanism="zero"`` and ``reset_delay=True`` set
  ``mem = 0`` on the step after a spike, discarding that step's input; spiking's zero reset
  keeps it (as snnTorch ``Leaky`` does).
- ``zero`` with ``reset_delay=False`` equals spiking's immediate zero reset as long as
  ``threshold >= 0`` (then ``r`` is always 0), which is checked.
- ``graded_spikes_factor != 1``, ``inhibition``, ``state_quant``, conv recurrence.

snnTorch makes spikes and resets float32 (``(x > 0).float()``): in a float64 model its
``r * threshold`` and ``spk * V`` round a 0-dim float64 ``threshold`` / ``V`` to float32 and
its float32 spikes cannot enter a float64 ``nn.Linear``. spiking computes in the input's
dtype throughout; the tests use float32-representable thresholds for exact comparison.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from spiking.interop import _common as C
from spiking.models.recurrent import Recurrent
from spiking.neurons.lif import LIF, CubaLIF
from spiking.sequential import Sequential

SUPPORTED = ("snntorch.Leaky, snntorch.Synaptic, snntorch.RLeaky (linear or one-to-one "
             "recurrence) and torch.nn.Sequential stacks of those with "
             + ", ".join(c.__name__ for c in C.STATELESS))

# snnTorch surrogate factory -> (spiking surrogate, name of the closure variable holding its
# sharpness). Gradients agree: snntorch/surrogate.py ATan, FastSigmoid and Sigmoid backward.
_SURROGATES = {"atan": ("atan", "alpha"), "fast_sigmoid": ("fast_sigmoid", "slope"),
               "sigmoid": ("sigmoid", "slope")}


def _surrogate(m, override):
    if override is not None:
        return override, None
    fn = m.spike_grad
    qual = getattr(fn, "__qualname__", "")
    factory = qual.split(".<locals>")[0]
    if getattr(fn, "__module__", "") == "snntorch.surrogate" and factory in _SURROGATES:
        ours, var = _SURROGATES[factory]
        return ours, float(inspect.getclosurevars(fn).nonlocals[var])
    shown = "surrogate_disable=True" if m.surrogate_disable else qual or repr(fn)
    raise ValueError(
        f"{type(m).__name__}: spike_grad {shown} has no spiking equivalent (mapped: snntorch "
        f"surrogate.atan, fast_sigmoid, sigmoid); pass surrogate=<name> to from_snntorch to "
        f"choose one (forward spikes are the same Heaviside either way)")


def _check_unsupported(m) -> None:
    name = type(m).__name__
    g = getattr(m, "graded_spikes_factor", None)
    if g is not None and (isinstance(g, nn.Parameter) or not torch.all(g == 1)):
        raise ValueError(f"{name}: graded_spikes_factor={g.detach().flatten()[:3].tolist()} "
                         f"(or learnable) is not supported; spiking emits unit spikes")
    if m.inhibition:
        raise ValueError(f"{name}: inhibition=True is not supported")
    if m.state_quant:
        raise ValueError(f"{name}: state_quant is not supported")


def _reset(m) -> tuple[str, bool]:
    """(reset, reset_delay) of the spiking neuron reproducing ``m``; ValueError if none does."""
    name, mech, delay = type(m).__name__, m.reset_mechanism, bool(m.reset_delay)
    if mech == "none":
        return "none", False
    if mech == "subtract":
        if not delay:
            raise ValueError(
                f"{name}: reset_mechanism='subtract' with reset_delay=False is not supported: "
                f"snnTorch then decides the spike on mem - r*threshold but subtracts only "
                f"spk*threshold; use reset_delay=True (snnTorch's default)")
        return "subtract", True
    if delay:
        if name != "Leaky":
            raise ValueError(
                f"{name}: reset_mechanism='zero' with reset_delay=True is not supported: "
                f"snnTorch sets mem = 0 on the step after a spike, dropping that step's input; "
                f"use reset_delay=False or reset_mechanism='subtract'")
        return "zero", True
    if (m.threshold.detach() < 0).any():
        raise ValueError(f"{name}: reset_mechanism='zero' with reset_delay=False needs "
                         f"threshold >= 0 to be reproduced, got {m.threshold.flatten()[:3]}")
    return "zero", False


def _neuron(m, dt, override, cls, tau_names):
    _check_unsupported(m)
    reset, delay = _reset(m)
    sg, sg_alpha = _surrogate(m, override)
    owner = type(m).__name__
    kw = {} if cls is LIF else {"tau_syn": 5e-3}
    ours = cls(dt=dt, reset=reset, reset_delay=delay, surrogate=sg, surrogate_alpha=sg_alpha,
               **kw)
    for ours_name, peer_name in tau_names:
        peer = getattr(m, peer_name)
        C.put(ours, ours_name, C.taus_from_decays(dt, peer, peer_name, owner),
              C.requires_grad(peer))
    C.put(ours, "threshold", m.threshold, C.requires_grad(m.threshold))
    return ours


def leaky(m, dt, override):
    return _neuron(m, dt, override, LIF, [("tau_mem", "beta")])


def synaptic(m, dt, override):
    return _neuron(m, dt, override, CubaLIF, [("tau_mem", "beta"), ("tau_syn", "alpha")])


def rleaky(m, dt, override):
    neuron = _neuron(m, dt, override, LIF, [("tau_mem", "beta")])
    rec = m.recurrent
    if m.all_to_all:
        if not isinstance(rec, nn.Linear):
            raise ValueError(f"RLeaky: all_to_all recurrence through {type(rec).__name__} "
                             f"(conv2d_channels) is not supported; only linear_features")
        n = rec.in_features
        ours = Recurrent(neuron, n, recurrent="dense", recurrent_bias=rec.bias is not None)
        C.copy_linear(rec.weight, rec.bias, ours.recurrent)
        return ours
    v = rec.V if isinstance(rec.V, torch.Tensor) else torch.as_tensor(rec.V)
    n = v.shape[-1] if v.dim() == 1 and v.numel() > 1 else None
    ours = Recurrent(neuron, n, recurrent="one_to_one")
    ours.recurrent_weight = nn.Parameter(v.detach().clone(), requires_grad=v.requires_grad)
    return ours


def convert(module: nn.Module, dt: float, surrogate=None) -> nn.Module:
    import snntorch

    override = C.resolve_surrogate(surrogate)
    table = {snntorch.Leaky: leaky, snntorch.Synaptic: synaptic, snntorch.RLeaky: rleaky}
    fn = table.get(type(module))
    if fn is not None:
        return fn(module, dt, override)
    if type(module) is nn.Sequential:
        layers = []
        for layer in module:
            fn = table.get(type(layer))
            layers.append(fn(layer, dt, override) if fn is not None
                          else C.copy_stateless(layer, "from_snntorch", SUPPORTED))
        return Sequential(*layers)
    raise ValueError(f"from_snntorch: cannot convert {type(module).__module__}."
                     f"{type(module).__qualname__}; supported: {SUPPORTED}")
