"""Networks that own weights and compose neurons and kernels."""

from spiking.models.recurrent import Recurrent, RecurrentState

__all__ = ["Recurrent", "RecurrentState"]
