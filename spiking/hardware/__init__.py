"""Hardware layer: what a trained network would cost, and how it would be laid out, on
neuromorphic hardware.

- :mod:`~spiking.hardware.counting`: operation counts with NeuroBench's names (``count``)
- :mod:`~spiking.hardware.energy`: device profiles (``profiles/*.toml``) and energy estimates
- :mod:`~spiking.hardware.spinnaker`: SpiNNaker-like mapping (Linear, Conv, Recurrent),
  execution profile; :mod:`~spiking.hardware.fixedpoint_sim`: its fixed-point event-driven
  simulator
- :mod:`~spiking.hardware.crossbar`: memristive crossbars, non-ideal inference, energy and
  latency; :mod:`~spiking.hardware.memristive_lsm`: reservoirs drawn from the device
- :mod:`~spiking.hardware.export`: NIR export/import; :mod:`~spiking.hardware.weightmap`:
  event-driven weight maps and PyNN lists
- :mod:`~spiking.hardware.report`: Markdown/JSON reports, ``demo_section``

Names are imported lazily (``spiking.hardware.count`` loads only the counting module).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "count": "counting", "Counts": "counting", "LayerCounts": "counting",
    "load_profile": "energy", "available_profiles": "energy", "estimate": "energy",
    "EnergyEstimate": "energy", "DeviceProfile": "energy",
    "to_nir": "export", "from_nir": "export", "write_nir": "export", "read_nir": "export",
    "write_weightmap": "weightmap", "read_weightmap": "weightmap",
    "demo_section": "report", "profile_report": "report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'spiking.hardware' has no attribute {name!r}")
    return getattr(importlib.import_module(f"spiking.hardware.{mod}"), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
