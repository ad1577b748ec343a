"""Sum pooling, the pooling that spiking hardware and NIR express as fixed synapses.

:class:`SumPool2d` adds each ``kernel_size`` window (``nn.AvgPool2d`` with
``divisor_override=1``, so the sum is exact rather than an average times the window size).
Together with ``nn.AvgPool2d`` it is what :mod:`spiking.hardware.export` writes as NIR
``SumPool2d`` / ``AvgPool2d`` nodes and :func:`spiking.hardware.spinnaker.unroll_pool` turns into
fixed-weight synapses (1 for a sum, ``1 / window`` for an average). Max pooling has neither form.
"""

from __future__ import annotations

from torch import nn


class SumPool2d(nn.AvgPool2d):
    """``y[c, i, j] = sum of x[c]`` over the window at ``(i, j)`` (zero padding adds nothing)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                         divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
