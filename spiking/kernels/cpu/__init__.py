"""Fused CPU kernels (numba): one parallel kernel per direction over the whole time loop.

Modules here import numba at import time; the dispatcher imports them lazily (registered as
``"spiking.kernels.cpu.<name>:run"`` strings), so ``import spiking`` never needs numba.
"""
