"""Synaptic delays for the feed-forward projections of the recurrent models (RSNN, EGRU).

With ``delay_taps`` K > 1 a projection ``Linear(I, O)`` becomes a causal dilated convolution
over time: the drive of output ``j`` at step ``t`` is ``b_j + sum_i sum_k W[j, i, k] x[t - (K-1-k)
d, i]`` (``d`` = ``delay_spacing``, zeros before the first step), i.e. every synapse weighs its
input at the K delays ``0, d, ..., (K-1) d`` steps. Learnt delays are what lifted SHD accuracy
in Hammouamri, Khalfaoui-Hassani & Masquelier 2023 ("Learning delays in spiking neural
networks using dilated convolutions with learnable spacings", ICLR 2024); they learn one
delay per synapse (a Gaussian-interpolated tap), this is the dense-tap form of the same idea.
K = 1 keeps the plain ``nn.Linear`` (and its state-dict keys).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn


def check(taps, spacing) -> tuple[int, int]:
    """``(taps, spacing)`` as ints, or a ValueError naming both."""
    ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and int(v) == v and v >= 1
             for v in (taps, spacing))
    if not ok:
        raise ValueError(f"delay_taps and delay_spacing must be integers >= 1, got {taps!r}, "
                         f"{spacing!r}")
    return int(taps), int(spacing)


def projection(n_in: int, n_out: int, taps: int, spacing: int) -> nn.Module:
    """``nn.Linear`` for one tap, else ``nn.Conv1d`` with ``taps`` taps ``spacing`` apart."""
    if taps == 1:
        return nn.Linear(n_in, n_out)
    return nn.Conv1d(n_in, n_out, taps, dilation=spacing)


def apply(proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x [T, B, I]`` -> ``[T, B, O]`` through :func:`projection`'s module (causal in time).

    Called as a module so that forward hooks (the operation counter's) see it."""
    if isinstance(proj, nn.Linear):
        return proj(x)
    left = (proj.kernel_size[0] - 1) * proj.dilation[0]
    return proj(nn.functional.pad(x.permute(1, 2, 0), (left, 0))).permute(2, 0, 1)


def fan_out_steps(events_per_step: torch.Tensor, taps: int, spacing: int) -> int:
    """Sum over input steps ``s`` of ``events[s] * #{k < taps: s + k spacing < T}``: how many
    (event, delay) pairs reach an output step inside the sequence (each reaches every output
    unit of the projection once)."""
    t = events_per_step.shape[0]
    reach = torch.clamp((t - 1 - torch.arange(t)) // spacing + 1, max=taps)
    return int((events_per_step.to(torch.int64) * reach).sum())
