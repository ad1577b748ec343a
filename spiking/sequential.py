"""Sequential: a stack of layers over time-first sequences with explicit per-layer state."""

from __future__ import annotations

import torch
from torch import nn


def _is_stateful(m: nn.Module) -> bool:
    """A module taking ``(x, state)`` over a whole sequence and returning ``(out, state, ...)``."""
    return getattr(m, "stateful", False) or hasattr(m, "initial_state")


class Sequential(nn.Sequential):
    """Layers applied in order to ``x`` ``[T, B, ...]``.

    Stateless layers (``nn.Linear``, ``nn.Conv2d``, ``nn.Flatten``, ...) are applied to every
    time step at once (time folded into the batch); stateful ones (neurons, recurrent layers)
    get and return their own state. ``out, states = seq(x, states=None)``; ``states`` is a
    tuple with one entry per layer (None for stateless layers). ``record=True`` also returns
    each layer's output sequence (a list) for rasters and counting.
    """

    def forward(self, x: torch.Tensor, states=None, record: bool = False):
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError(
                "Sequential expects a time-first sequence [T, B, ...] (rank >= 3), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        layers = list(self)
        if states is None:
            states = (None,) * len(layers)
        elif len(states) != len(layers):
            raise ValueError(f"states has {len(states)} entries, expected one per layer "
                             f"({len(layers)})")
        new_states, outputs = [], []
        for layer, st in zip(layers, states):
            if _is_stateful(layer):
                res = layer(x, st)
                x, st = res[0], res[1]
            else:
                t, b = x.shape[:2]
                y = layer(x.reshape(t * b, *x.shape[2:]))
                x, st = y.reshape(t, b, *y.shape[1:]), None
            new_states.append(st)
            if record:
                outputs.append(x)
        if record:
            return x, tuple(new_states), outputs
        return x, tuple(new_states)
