"""spiking: spiking and liquid-time-constant recurrent networks on fused kernels.

`import spiking` needs only torch and numpy; optional dependencies (numba, cupy, tonic, nir,
snntorch, norse, matplotlib, h5py) are imported where they are used.
"""

from spiking import surrogate
from spiking.neurons import ALIF, CfC, CubaLIF, LI, LIF, LTC, LIFState
from spiking.pooling import SumPool2d
from spiking.sequential import Sequential

__version__ = "0.1.0"

__all__ = [
    "ALIF",
    "CfC",
    "CubaLIF",
    "LI",
    "LIF",
    "LIFState",
    "LTC",
    "Sequential",
    "SumPool2d",
    "surrogate",
    "__version__",
]
