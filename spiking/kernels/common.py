"""Helpers shared by every kernel: time constants to per-step decays, boundary validation."""

from __future__ import annotations

import math

import torch

DISCRETIZATIONS = ("exp", "euler")

# The device type whose tensors the CUDA wrappers (cuda_*.py) accept. Only the CPU emulator of
# the tests (tests/cuda_emu.py), which runs the .cu kernels compiled by g++ on CPU
# tensors, sets it to "cpu".
CUDA_DEVICE_TYPE = "cuda"


def on_cuda(t: torch.Tensor) -> bool:
    """Whether the CUDA kernels can take `t` (a CUDA tensor; a CPU one under the emulator)."""
    return t.device.type == CUDA_DEVICE_TYPE


def as_param(value, name: str, *, dtype=None) -> torch.Tensor:
    """A float or tensor as a tensor; raises ValueError naming `name` if it holds a NaN."""
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=dtype)
    if torch.isnan(t.detach()).any():
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return t


def check_positive(value, name: str, *, allow_inf: bool = False) -> None:
    """Raise ValueError naming `name` unless every element of `value` is > 0 (and finite)."""
    t = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    bad = (t <= 0) | torch.isnan(t)
    if not allow_inf:
        bad |= torch.isinf(t)
    if bad.any():
        shown = t.flatten()[bad.flatten()][:3].tolist()
        kind = "> 0" if allow_inf else "finite and > 0"
        raise ValueError(f"{name} must be {kind} (seconds), got {shown}")


def decay(dt: float, tau, method: str = "exp"):
    """Per-step decay factor of a leaky variable with time constant `tau` (s) at step `dt` (s).

    This is the one place time constants become decays:

    - ``exp``:   alpha = exp(-dt / tau)   (exact solution of dx/dt = -x / tau over one step)
    - ``euler``: alpha = 1 - dt / tau     (forward Euler, as Norse integrates)

    ``tau = inf`` gives alpha = 1 (no leak). Works on floats and tensors (differentiable in tau).
    """
    if method not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {method!r}")
    if isinstance(tau, torch.Tensor):
        return torch.exp(-dt / tau) if method == "exp" else 1.0 - dt / tau
    return math.exp(-dt / tau) if method == "exp" else 1.0 - dt / tau


def tau_from_decay(dt: float, alpha: float, method: str = "exp") -> float:
    """Inverse of `decay` for a float: the time constant whose per-step decay is `alpha`."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"decay factor must be in (0, 1], got {alpha!r}")
    if alpha == 1.0:
        return math.inf
    return -dt / math.log(alpha) if method == "exp" else dt / (1.0 - alpha)


def check_dt(dt) -> float:
    dt_f = float(dt)
    if not (dt_f > 0 and math.isfinite(dt_f)):
        raise ValueError(f"dt must be finite and > 0 (seconds), got {dt!r}")
    return dt_f


def check_sequence(x: torch.Tensor, name: str = "input", *, min_rank: int = 3,
                   check_finite: bool = False) -> None:
    """Validate a time-first sequence [T, B, ...]: a floating tensor of rank >= `min_rank`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank} (time-first [T, B, N, ...]), "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if check_finite and not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {n_bad} non-finite values (NaN/inf); check_finite=True")
