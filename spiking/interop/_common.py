"""Helpers shared by the peer converters: exact parameter copies and time constants."""

from __future__ import annotations

import copy

import torch
from torch import nn

from spiking import surrogate as _surrogate
from spiking.kernels import common
from spiking.neurons.base import TIME_CONSTANTS, set_time_constant

# Stateless torch layers a converted stack may hold; applied per time step in both the peers
# and spiking.Sequential (which folds time into the batch), so they are copied unchanged.
STATELESS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten, nn.Identity, nn.Dropout,
             nn.AvgPool2d, nn.MaxPool2d)


def f64(value) -> torch.Tensor:
    """A parameter as a detached float64 tensor (a float32 value is carried over exactly)."""
    return torch.as_tensor(value).detach().to(torch.float64)


def requires_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def taus_from_decays(dt: float, decay, name: str, owner: str) -> torch.Tensor:
    """Time constants (s, float64) whose ``exp`` decay per step ``dt`` is ``decay``.

    ``decay`` is clamped to ``[0, 1]`` first, as snnTorch clamps ``beta``/``alpha`` in its
    forward; 1 gives ``tau = inf``. A decay of 0 (or less) has no time constant: ValueError.
    """
    d = f64(decay).clamp(max=1.0)
    if (d <= 0).any() or torch.isnan(d).any():
        bad = d.flatten()[((d <= 0) | torch.isnan(d)).flatten()][:3].tolist()
        raise ValueError(f"{owner}: {name} must be in (0, 1] to map to a time constant "
                         f"(spiking uses tau = -dt / log({name})), got {bad}")
    taus = [common.tau_from_decay(dt, v) for v in d.flatten().tolist()]
    return torch.tensor(taus, dtype=torch.float64).reshape(d.shape)


def taus_from_inverse(tau_inv, name: str, owner: str) -> torch.Tensor:
    """Time constants (s, float64) from inverse time constants (1/s); 0 gives ``inf``."""
    k = f64(tau_inv)
    if (k < 0).any() or not torch.isfinite(k).all():
        raise ValueError(f"{owner}: {name} must be finite and >= 0 (1/s), got "
                         f"{k.flatten()[:3].tolist()}")
    return 1.0 / k


def put(module: nn.Module, name: str, value: torch.Tensor, learn: bool) -> None:
    """Replace ``module.<name>`` by ``value`` (exact copy), as a Parameter iff ``learn`` (a
    learnable time constant as the Parameter ``log_<name>``, see ``set_time_constant``)."""
    value = value.detach().clone()
    if not torch.isfinite(value).all() and not name.startswith("tau"):
        raise ValueError(f"{name} must be finite, got {value.flatten()[:3].tolist()}")
    if name in TIME_CONSTANTS:
        set_time_constant(module, name, value, learn)
        return
    delattr(module, name)
    if learn:
        module.register_parameter(name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def copy_linear(src_weight, src_bias, dst: nn.Linear) -> None:
    """Copy weights (and bias) exactly, in the source's dtype, keeping requires_grad flags."""
    dst.weight = nn.Parameter(src_weight.detach().clone(),
                              requires_grad=src_weight.requires_grad)
    if src_bias is not None:
        dst.bias = nn.Parameter(src_bias.detach().clone(), requires_grad=src_bias.requires_grad)


def copy_stateless(m: nn.Module, owner: str, supported: str) -> nn.Module:
    if type(m) in STATELESS:
        return copy.deepcopy(m)
    raise ValueError(f"{owner}: cannot convert a layer of type {type(m).__module__}."
                     f"{type(m).__qualname__}; supported: {supported}")


def resolve_surrogate(spec):
    """An explicit surrogate override (name or Surrogate), or None."""
    return None if spec is None else _surrogate.get(spec)

