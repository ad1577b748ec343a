"""Convert snnTorch and Norse modules into spiking modules that produce the same spikes.

``from_snntorch(module)`` and ``from_norse(module)`` copy every parameter exactly (weights in
their dtype; time constants derived in float64) and map each peer update onto the options of
:mod:`spiking.kernels.lif`; the module docstrings of ``spiking.interop._snntorch`` and
``spiking.interop._norse`` state the peer updates and which options cannot be reproduced
(those raise ValueError naming the option). Tests drive both on the same inputs in float64
and require identical spikes and membranes within 1e-9.

Converted modules start from rest, as the peers do; a peer's stored hidden state is not
carried over (:func:`state_from_norse` converts a Norse state explicitly). For exact float64
agreement convert the peer after ``.double()`` or keep its parameters in float64.
snnTorch and Norse are imported only when a converter is called.
"""

from __future__ import annotations

from torch import nn

from spiking.kernels import common


def from_snntorch(module: nn.Module, *, dt: float = 1e-3, surrogate=None) -> nn.Module:
    """An snnTorch ``Leaky``, ``Synaptic``, ``RLeaky`` or ``nn.Sequential`` stack as spiking.

    ``Leaky`` -> :class:`~spiking.LIF`, ``Synaptic`` -> :class:`~spiking.CubaLIF` (both with
    ``reset_delay=True``, snnTorch's default), ``RLeaky`` ->
    :class:`~spiking.models.Recurrent` over a LIF, ``nn.Sequential`` ->
    :class:`~spiking.Sequential`. snnTorch decays are per step; ``dt`` (s) fixes the time
    constants ``tau = -dt / log(beta)``. ``surrogate`` (name or Surrogate) overrides the
    mapped surrogate gradient (atan, fast_sigmoid and sigmoid map with their sharpness).
    """
    from spiking.interop import _snntorch

    return _snntorch.convert(module, common.check_dt(dt), surrogate)


def from_norse(module: nn.Module, *, surrogate=None) -> nn.Module:
    """A Norse LIF/LSNN module (cell, sequence, recurrent) or ``SequentialState`` as spiking.

    ``LIF`` -> :class:`~spiking.CubaLIF`, ``LSNN`` -> :class:`~spiking.ALIF` with a synaptic
    current, ``*Recurrent`` -> :class:`~spiking.models.Recurrent`, cells -> their ``cell()``
    form, ``SequentialState`` -> :class:`~spiking.Sequential`. Norse's ``"super"`` method maps
    to ``fast_sigmoid`` with alpha 1 (Norse 1.1's SuperSpike ignores its alpha); ``surrogate``
    overrides the mapping.
    """
    from spiking.interop import _norse

    return _norse.convert(module, surrogate)


def state_from_norse(state, layer):
    from spiking.interop import _norse

    return _norse.state_from_norse(state, layer)


state_from_norse.__doc__ = """A Norse LIF/LSNN state as the state of ``layer`` (from_norse's result).

    See :func:`spiking.interop._norse.state_from_norse`."""

__all__ = ["from_norse", "from_snntorch", "state_from_norse"]
