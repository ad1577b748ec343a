"""Networks that own weights and compose neurons and kernels."""

from spiking.models.recurrent import Recurrent, RecurrentState

__all__ = ["Recurrent", "RecurrentState"]

from spiking.models.csnn import CSNN
from spiking.models.readout import ClassifierOutput
from spiking.models.rsnn import RSNN

__all__ += ["CSNN", "RSNN", "ClassifierOutput"]
