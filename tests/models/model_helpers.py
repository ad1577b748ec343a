"""Helpers shared by the model tests."""

import torch


@torch.no_grad()
def fold_batchnorm(lin: torch.nn.Linear, bn: torch.nn.BatchNorm1d) -> None:
    """Eval-mode BatchNorm after ``lin`` as an affine map folded into ``lin`` (in place)."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    lin.bias.copy_((lin.bias - bn.running_mean) * s + bn.bias)
    lin.weight.mul_(s[:, None])
