"""Collation of variable-length, time-first samples for ``torch.utils.data.DataLoader``."""

from __future__ import annotations

import numpy as np
import torch


def collate_time_first(batch):
    """``[(x [T_i, ...], label), ...]`` -> ``(x [T_max, B, ...], labels [B], lengths [B])``.

    Shorter samples are zero-padded at the end; ``lengths[b] = T_b``. Use as
    ``DataLoader(binned_dataset, batch_size=..., collate_fn=collate_time_first)``.
    """
    if len(batch) == 0:
        raise ValueError("collate_time_first got an empty batch")
    xs, labels = [], []
    for k, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"batch item {k} must be (tensor, label), got {type(item).__name__}")
        x = torch.as_tensor(item[0]) if isinstance(item[0], np.ndarray) else item[0]
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ValueError(f"batch item {k}: expected a tensor [T, ...], got {type(x).__name__}")
        xs.append(x)
        labels.append(int(item[1]))
    feat = xs[0].shape[1:]
    for k, x in enumerate(xs):
        if x.shape[1:] != feat:
            raise ValueError(f"batch item {k} has shape {tuple(x.shape)}; expected "
                             f"[T, {', '.join(map(str, feat))}] like item 0")
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    out = xs[0].new_zeros((int(lengths.max()), len(xs), *feat))
    for b, x in enumerate(xs):
        out[: x.shape[0], b] = x
    return out, torch.tensor(labels, dtype=torch.long), lengths
