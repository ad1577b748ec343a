"""Surrogate gradients for the spike nonlinearity, registered by name.

Forward is always the Heaviside step ``s = (x > 0)`` of ``x = h - threshold``; backward replaces
its derivative by a smooth pseudo-derivative ``g(x; alpha)`` whose sharpness is ``alpha``.
Each built-in also states the primitive whose derivative ``g`` is (tests check ``g`` against a
finite difference of it), and carries a ``kernel_id`` that the fused kernels implement.

Built-ins (x = h - threshold):

=================  ===============  =============================================  =========
name               default alpha    g(x)                                           kernel_id
=================  ===============  =============================================  =========
atan               2.0              (alpha/2) / (1 + (pi/2 * alpha * x)^2)          0
fast_sigmoid       25.0             1 / (1 + alpha*|x|)^2                           1
sigmoid            25.0             alpha * sig(alpha*x) * (1 - sig(alpha*x))       2
triangle           1.0              alpha * max(0, 1 - alpha*|x|)                   3
straight_through   2.0              alpha/2 where |x| < 1/alpha, else 0             4
=================  ===============  =============================================  =========

``superspike`` is an alias of ``fast_sigmoid`` (Zenke & Ganguli 2018). Defaults follow
snnTorch (atan alpha=2, fast_sigmoid slope=25, sigmoid slope=25); Norse's "super" method is
``fast_sigmoid`` with alpha=1 (Norse 1.1's SuperSpike backward is ``1/(|x|+1)^2`` and ignores
its ``alpha``; checked in tests/test_interop.py).

Register your own with :func:`register`; fused kernels only know the built-ins, so a custom
surrogate runs on the reference backend (``backend="auto"`` says so once in the log).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

GradFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate with its sharpness. Calling it applies the spike function."""

    name: str
    alpha: float
    grad_fn: GradFn
    primitive_fn: GradFn | None = None
    kernel_id: int | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return SpikeFunction.apply(x, self)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The pseudo-derivative g(x) used in place of the Heaviside's derivative."""
        return self.grad_fn(x, self.alpha)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        if self.primitive_fn is None:
            raise NotImplementedError(f"surrogate {self.name!r} did not register a primitive")
        return self.primitive_fn(x, self.alpha)


class SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


@dataclass(frozen=True)
class _Entry:
    grad_fn: GradFn
    primitive_fn: GradFn | None
    default_alpha: float
    kernel_id: int | None


_REGISTRY: dict[str, _Entry] = {}
_ALIASES = {"superspike": "fast_sigmoid", "ste": "straight_through"}


def register(name: str, grad: GradFn, primitive: GradFn | None = None, *,
             default_alpha: float = 1.0, kernel_id: int | None = None,
             overwrite: bool = False) -> None:
    """Register a surrogate `grad(x, alpha)` (and optionally its `primitive(x, alpha)`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"surrogate name must be a non-empty string, got {name!r}")
    key = name.lower()
    if (key in _REGISTRY or key in _ALIASES) and not overwrite:
        raise ValueError(f"surrogate {name!r} is already registered; pass overwrite=True")
    if not callable(grad):
        raise ValueError(f"surrogate {name!r}: grad must be callable, got {type(grad).__name__}")
    _REGISTRY[key] = _Entry(grad, primitive, float(default_alpha), kernel_id)


def available() -> list[str]:
    return sorted(_REGISTRY) + sorted(_ALIASES)


def get(spec: str | Surrogate | None = None, alpha: float | None = None) -> Surrogate:
    """A Surrogate from a name (default ``atan``) or an existing Surrogate (alpha overrides)."""
    if isinstance(spec, Surrogate):
        if alpha is None:
            return spec
        return Surrogate(spec.name, _check_alpha(alpha, spec.name), spec.grad_fn,
                         spec.primitive_fn, spec.kernel_id)
    name = "atan" if spec is None else spec
    if not isinstance(name, str):
        raise ValueError(f"surrogate must be a name or Surrogate, got {type(spec).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        raise ValueError(f"unknown surrogate {name!r}; registered: {', '.join(available())}")
    e = _REGISTRY[key]
    a = e.default_alpha if alpha is None else _check_alpha(alpha, key)
    return Surrogate(key, a, e.grad_fn, e.primitive_fn, e.kernel_id)


def _check_alpha(alpha, name: str) -> float:
    a = float(alpha)
    if not (a > 0 and math.isfinite(a)):
        raise ValueError(f"surrogate {name!r}: sharpness alpha must be finite and > 0, got {alpha!r}")
    return a


# ---- built-ins -------------------------------------------------------------------------------

def _atan_grad(x, a):
    return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)


def _atan_prim(x, a):
    return torch.atan(math.pi / 2 * a * x) / math.pi


def _fast_sigmoid_grad(x, a):
    return 1.0 / (1.0 + a * x.abs()) ** 2


def _fast_sigmoid_prim(x, a):
    return x / (1.0 + a * x.abs())


def _sigmoid_grad(x, a):
    s = torch.sigmoid(a * x)
    return a * s * (1 - s)


def _sigmoid_prim(x, a):
    return torch.sigmoid(a * x)


def _triangle_grad(x, a):
    return a * torch.clamp(1 - a * x.abs(), min=0)


def _triangle_prim(x, a):
    u = torch.clamp(a * x, -1, 1)
    return u - u * u.abs() / 2


def _st_grad(x, a):
    return (a / 2) * (x.abs() < 1 / a).to(x.dtype)


def _st_prim(x, a):
    return torch.clamp(a * x, -1, 1) / 2


register("atan", _atan_grad, _atan_prim, default_alpha=2.0, kernel_id=0)
register("fast_sigmoid", _fast_sigmoid_grad, _fast_sigmoid_prim, default_alpha=25.0, kernel_id=1)
register("sigmoid", _sigmoid_grad, _sigmoid_prim, default_alpha=25.0, kernel_id=2)
register("triangle", _triangle_grad, _triangle_prim, default_alpha=1.0, kernel_id=3)
register("straight_through", _st_grad, _st_prim, default_alpha=2.0, kernel_id=4)


def spike(x: torch.Tensor, surrogate: str | Surrogate | None = None) -> torch.Tensor:
    """Heaviside spike of `x` with the surrogate's gradient."""
    return get(surrogate)(x)
