"""Model registry: `spiking train --model NAME` builds models through this table.

A factory takes keyword arguments describing the data (``input_shape`` per time step, e.g.
``(2, 34, 34)`` or ``(700,)``, and ``n_classes``) plus model options, and returns an
``nn.Module`` mapping ``x [T, B, *input_shape]`` to ``logits [B, n_classes]`` (it may return
``(logits, aux)`` where ``aux`` is a dict, e.g. ``{"spikes": tensor}`` for spike counts).
Factories register under a name with :func:`register_model`; modules register on import, and
:func:`get_model` imports the known model modules lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

_FACTORIES: dict[str, Callable] = {}
# name -> module that registers it on import (kept lazy so `import spiking` stays light)
_KNOWN = {
    "csnn": "spiking.models.csnn",
    "rsnn": "spiking.models.rsnn",
    "egru": "spiking.models.egru",
    "lsm": "spiking.models.lsm",
    "ltc": "spiking.models.ltc",
    "cfc": "spiking.models.ltc",
    "lmu": "spiking.models.lmu",
    "lmuformer": "spiking.models.lmuformer",
    "spiking-lmuformer": "spiking.models.lmuformer",
    "spikegpt": "spiking.models.spikegpt",
}


def register_model(name: str, factory: Callable, *, overwrite: bool = False) -> None:
    key = name.lower()
    if key in _FACTORIES and not overwrite and _FACTORIES[key] is not factory:
        raise ValueError(f"model {name!r} is already registered")
    _FACTORIES[key] = factory


def available_models() -> list[str]:
    names = set(_FACTORIES)
    for name, mod in _KNOWN.items():
        if importlib.util.find_spec(mod) is not None:
            names.add(name)
    return sorted(names)


def get_model(name: str, **kwargs):
    key = name.lower()
    if key not in _FACTORIES and key in _KNOWN:
        try:
            importlib.import_module(_KNOWN[key])
        except ModuleNotFoundError as e:
            if e.name != _KNOWN[key]:
                raise
    if key not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _FACTORIES[key](**kwargs)
