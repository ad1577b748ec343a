"""Classifier readouts shared by the baseline models (CSNN, RSNN).

A readout turns a time-first feature sequence ``[T, B, F]`` into logits ``[B, classes]``:

- ``"li"``: ``Linear(F, classes)`` drives leaky integrators (:class:`spiking.LI`); the logits
  are the membrane reduced over time with ``reduce`` (``mean``, ``max`` or ``last``).
  Membrane readouts of this kind are used by Cramer et al. 2020 (SHD paper, max over time)
  and Zenke & Vogels 2021.
- ``"count"``: ``Linear(F, classes)`` drives spiking LIF neurons; the logits are the spike
  counts over time (the rate code of snnTorch's tutorials). Output spikes count as activity.

Every model returns :class:`ClassifierOutput` ``(logits, activity)``, where ``activity`` maps a
layer name to its spike tensor ``[T, B, ...]``; :func:`spikes_per_sample` sums them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from spiking.neurons import LI, LIF

READOUTS = ("li", "count")
REDUCTIONS = ("mean", "max", "last")


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor
    activity: dict[str, torch.Tensor]


def spikes_per_sample(activity: dict[str, torch.Tensor]) -> torch.Tensor:
    """Total number of spikes of every recorded layer, per sample: a ``[B]`` tensor."""
    total = None
    for s in activity.values():
        n = s.detach().sum(dim=tuple(d for d in range(s.dim()) if d != 1))
        total = n if total is None else total + n
    if total is None:
        raise ValueError("activity is empty: the model recorded no spiking layer")
    return total


def reduce_time(v: torch.Tensor, reduce: str, lengths: torch.Tensor | None = None):
    """Reduce ``v`` ``[T, B, C]`` over time; ``lengths`` ``[B]`` masks padded steps."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    t = v.shape[0]
    if lengths is None:
        if reduce == "mean":
            return v.mean(0)
        if reduce == "max":
            return v.max(0).values
        return v[-1]
    lengths = lengths.to(v.device).clamp(1, t)
    steps = torch.arange(t, device=v.device)[:, None]
    mask = (steps < lengths[None, :]).to(v.dtype)[..., None]  # [T, B, 1]
    if reduce == "mean":
        return (v * mask).sum(0) / lengths[:, None].to(v.dtype)
    if reduce == "max":
        return v.masked_fill(mask == 0, float("-inf")).max(0).values
    return v[lengths - 1, torch.arange(v.shape[1], device=v.device)]


def time_readout(linear: nn.Linear, h: torch.Tensor, reduce: str,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[B, classes]`` of features ``h`` ``[T, B, F]`` through ``linear``, reduced over
    time (``lengths`` masks padded steps). ``"mean"`` averages the features first (the same
    logits as averaging per-step logits, the readout being affine); ``"last"`` reads the last
    valid step; ``"max"`` maxes the per-step logits."""
    if reduce == "max":
        t, b = h.shape[:2]
        return reduce_time(linear(h.reshape(t * b, -1)).reshape(t, b, -1), "max", lengths)
    return linear(reduce_time(h, reduce, lengths))


def readout_macs(linear: nn.Linear, reduce: str, t: int, b: int) -> int:
    """Multiply-accumulates of :func:`time_readout` for ``t`` steps and batch ``b``."""
    return (t if reduce == "max" else 1) * b * linear.in_features * linear.out_features


class Readout(nn.Module):
    """``Linear(F, classes)`` followed by an LI membrane or a spike-count readout."""

    def __init__(self, in_features: int, n_classes: int, *, kind: str = "li",
                 reduce: str = "mean", tau_mem: float = 20e-3, dt: float = 1e-3,
                 surrogate: str = "atan", backend: str = "auto"):
        super().__init__()
        if kind not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {kind!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"readout reduce must be one of {REDUCTIONS}, got {reduce!r}")
        self.kind, self.reduce = kind, reduce
        self.fc = nn.Linear(in_features, n_classes)
        if kind == "li":
            self.neuron = LI(tau_mem=tau_mem, dt=dt, backend=backend)
        else:
            self.neuron = LIF(tau_mem=tau_mem, dt=dt, surrogate=surrogate, backend=backend)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """``x`` ``[T, B, F]`` -> ``(logits [B, classes], output spikes or None)``."""
        t, b = x.shape[:2]
        y = self.fc(x.reshape(t * b, -1)).reshape(t, b, -1)
        out, _ = self.neuron(y)
        return self.logits(out, lengths)

    def logits(self, out: torch.Tensor, lengths: torch.Tensor | None = None):
        """The post-processing of the neuron's output ``out`` ``[T, B, classes]`` (LI membrane
        or LIF spikes): ``(logits, output spikes or None)``. Also turns the output of a
        layer stack ending in ``fc`` and ``neuron`` (e.g. ``CSNN.to_sequential()``) into the
        readout's logits."""
        if self.kind == "count":
            if lengths is not None:
                steps = torch.arange(out.shape[0], device=out.device)[:, None]
                out = out * (steps < lengths.to(out.device)[None, :]).to(out.dtype)[..., None]
            return out.sum(0), out
        return reduce_time(out, self.reduce, lengths), None
