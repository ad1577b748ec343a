"""Fixed sum-pooling of model inputs: camera frames over pixels, audio over channels.

Pooling before the first layer shrinks its weight matrix by the pool factor (squared for
frames), which for SHD-format audio is most of a recurrent model's parameters. The pooled
values are event counts, so the first layer still sees integer drive.
"""

from __future__ import annotations

import math

import torch


def pooled_size(shape: tuple, pool: int) -> int:
    """Inputs per step after :func:`sum_pool` of ``shape`` by ``pool``."""
    if not isinstance(pool, int) or pool < 1 or (pool > 1 and len(shape) not in (1, 3)):
        raise ValueError(f"input_pool must be an integer >= 1 and needs [C, H, W] frames or "
                         f"[channels] inputs, got {pool!r} for input shape {shape}")
    if pool == 1:
        return math.prod(shape)
    if len(shape) == 1:
        return -(-shape[0] // pool)
    return shape[0] * (shape[1] // pool) * (shape[2] // pool)


def sum_pool(x: torch.Tensor, shape: tuple, pool: int) -> torch.Tensor:
    """``x`` ``[T, B, *shape]`` -> ``[T, B, I]``: camera frames sum-pooled over ``pool`` x
    ``pool`` pixels (event counts per pooled pixel), 1-D channels (audio cochlea channels)
    summed in groups of ``pool`` neighbours (the last group may be shorter), e.g. SHD's 700
    channels to 140 with ``pool=5`` as in the SHD setup of Hammouamri et al. 2023."""
    t, b = x.shape[:2]
    if pool == 1:
        return x.reshape(t, b, -1)
    if len(shape) == 1:
        pad = -shape[0] % pool
        h = torch.nn.functional.pad(x.reshape(t * b, 1, -1), (0, pad))
        return (torch.nn.functional.avg_pool1d(h, pool) * pool).reshape(t, b, -1)
    h = torch.nn.functional.avg_pool2d(x.reshape(t * b, *shape), pool) * (pool * pool)
    return h.reshape(t, b, -1)
