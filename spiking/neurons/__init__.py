"""Neuron models: dynamics only (no synaptic weights). Each is a sequence module with a cell form."""

from spiking.kernels.li import LIState
from spiking.kernels.lif import LIFState
from spiking.neurons.base import Cell, Neuron
from spiking.neurons.li import LI
from spiking.neurons.lif import ALIF, LIF, CubaLIF
from spiking.neurons.ltc import LTC, CfC

__all__ = ["ALIF", "Cell", "CfC", "CubaLIF", "LI", "LIState", "LIF", "LIFState", "LTC", "Neuron"]
