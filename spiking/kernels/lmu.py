r"""LMU: the Legendre Memory Unit's linear memory, written once, in two equivalent modes.

Continuous memory (Voelker, Kajić & Eliasmith 2019, "Legendre Memory Units: Continuous-Time
Representation in Recurrent Neural Networks", NeurIPS, eq. 1-2): an order-``d`` state
``m in R^d`` that holds the last ``theta`` seconds of a scalar signal ``u`` on shifted Legendre
polynomials,

.. code-block:: text

    theta * dm/dt = A m + B u
    A[i, j] = (2i + 1) * (-1 if i < j else (-1)^(i - j + 1))      i, j = 0 .. d-1
    B[i]    = (2i + 1) * (-1)^i

Discretised with a zero-order hold over one step ``dt`` (as in the paper's code, which uses
``cont2discrete(..., method="zoh")``), computed exactly from one matrix exponential of the
augmented system (Van Loan 1978):

.. code-block:: text

    expm([[A, B], [0, 0]] * dt / theta) = [[Abar, Bbar], [0, 1]]

Per time step t, for every input channel ``u`` (shapes ``u[t]: [B, U]``, ``m[t]: [B, U, d]``):

.. code-block:: text

    m[t] = Abar @ m[t-1] + Bbar * u[t]                      (recurrent mode: `step`, `reference`)

Unrolled, with ``H[j] = Abar^j Bbar`` (the memory's impulse response, ``[T, d]``):

.. code-block:: text

    m[t] = sum_{j=0..t} H[j] * u[t-j]  +  Abar^(t+1) @ m[-1]     (parallel mode: `parallel`)

The sum is a causal convolution over time; `parallel` evaluates it with a real FFT of length
``2T`` (Chilkuri & Eliasmith 2021, "Parallelizing Legendre Memory Unit Training", ICML), the
initial-state term with a loop of ``T`` matrix-vector products (only when a state is given).
Both modes are differentiable with autograd and agree to rounding (tests compare outputs and
gradients). Time is in steps of ``dt``; ``theta`` is in the same unit (both seconds or both
steps: only ``dt / theta`` enters).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class LMUState(NamedTuple):
    """Memory state ``m`` ``[B, U, d]``."""

    m: torch.Tensor


def continuous_matrices(order: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [d, d], B [d])`` of the continuous Legendre delay system, before dividing by theta."""
    if int(order) != order or order < 1:
        raise ValueError(f"LMU order must be an integer >= 1, got {order!r}")
    i = torch.arange(order, dtype=torch.float64)
    ii, jj = torch.meshgrid(i, i, indexing="ij")
    sign = torch.where(ii < jj, -torch.ones_like(ii), (-1.0) ** (ii - jj + 1))
    a = (2 * ii + 1) * sign
    b = (2 * i + 1) * (-1.0) ** i
    return a.to(dtype), b.to(dtype)


def discretize(order: int, theta: float, dt: float = 1.0, dtype=torch.float64):
    """Zero-order-hold ``(Abar [d, d], Bbar [d])`` for window ``theta`` and step ``dt``."""
    if not (float(theta) > 0 and float(dt) > 0):
        raise ValueError(f"theta and dt must be > 0, got theta={theta!r}, dt={dt!r}")
    a, b = continuous_matrices(order)
    d = a.shape[0]
    aug = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    aug[:d, :d] = a
    aug[:d, d] = b
    e = torch.linalg.matrix_exp(aug * (float(dt) / float(theta)))
    return e[:d, :d].to(dtype).contiguous(), e[:d, d].to(dtype).contiguous()


def impulse_response(abar: torch.Tensor, bbar: torch.Tensor, n_steps: int) -> torch.Tensor:
    """``H [T, d]`` with ``H[j] = Abar^j Bbar`` (computed in float64, returned in Abar's dtype)."""
    a = abar.to(torch.float64)
    h = [bbar.to(torch.float64)]
    for _ in range(n_steps - 1):
        h.append(a @ h[-1])
    return torch.stack(h).to(abar.dtype) if n_steps > 0 else abar.new_zeros(0, abar.shape[0])


def initial_state(u_t: torch.Tensor, order: int) -> LMUState:
    """Zero memory for one step of input ``u_t`` ``[B, U]``."""
    return LMUState(u_t.new_zeros(*u_t.shape, order))


def step(u_t: torch.Tensor, state: LMUState, abar: torch.Tensor, bbar: torch.Tensor):
    """One step: ``m[t] = Abar m[t-1] + Bbar u[t]``; returns ``(m[t], LMUState(m[t]))``."""
    m = state.m @ abar.transpose(0, 1) + u_t.unsqueeze(-1) * bbar
    return m, LMUState(m)


def reference(u: torch.Tensor, state: LMUState, abar: torch.Tensor, bbar: torch.Tensor):
    """Recurrent mode (the specification): loop `step` over ``u`` ``[T, B, U]``.

    Returns ``(m [T, B, U, d], final LMUState)``.
    """
    outs = []
    for t in range(u.shape[0]):
        m, state = step(u[t], state, abar, bbar)
        outs.append(m)
    out = torch.stack(outs) if outs else u.new_zeros(*u.shape, abar.shape[0])
    return out, state


def parallel(u: torch.Tensor, state: LMUState | None, abar: torch.Tensor, bbar: torch.Tensor,
             h: torch.Tensor | None = None):
    """Parallel mode: the memory as an FFT causal convolution of ``u`` ``[T, B, U]``.

    ``h`` is the impulse response (``impulse_response(abar, bbar, T)``; computed if None).
    Returns ``(m [T, B, U, d], final LMUState)`` equal to :func:`reference`.
    """
    n = u.shape[0]
    d = abar.shape[0]
    if n == 0:
        st = state if state is not None else initial_state(u.new_zeros(u.shape[1:]), d)
        return u.new_zeros(*u.shape, d), st
    if h is None:
        h = impulse_response(abar, bbar, n)
    h = h[:n].to(u.dtype)
    nfft = 2 * n
    uf = torch.fft.rfft(u, n=nfft, dim=0)                     # [F, B, U]
    hf = torch.fft.rfft(h, n=nfft, dim=0)                     # [F, d]
    m = torch.fft.irfft(uf.unsqueeze(-1) * hf[:, None, None, :], n=nfft, dim=0)[:n]
    if state is not None:
        # homogeneous part Abar^(t+1) m[-1], one matrix-vector product per step
        hom, cur = [], state.m
        at = abar.transpose(0, 1).to(u.dtype)
        for _ in range(n):
            cur = cur @ at
            hom.append(cur)
        m = m + torch.stack(hom)
    return m, LMUState(m[-1])


def run(u: torch.Tensor, state: LMUState | None, abar, bbar, mode: str = "parallel",
        h: torch.Tensor | None = None):
    """Run the memory over ``u`` ``[T, B, U]`` in ``mode`` ``parallel`` or ``recurrent``."""
    if mode == "parallel":
        return parallel(u, state, abar, bbar, h)
    if mode == "recurrent":
        if state is None:
            state = initial_state(u.new_zeros(u.shape[1:]), abar.shape[0])
        return reference(u, state, abar.to(u.dtype), bbar.to(u.dtype))
    raise ValueError(f"LMU mode must be 'parallel' or 'recurrent', got {mode!r}")


def op_counts(t: int, b: int, u: int, order: int, mode: str = "recurrent") -> dict[str, int]:
    """Dense multiply-accumulates of the memory over a ``[T, B, U]`` input.

    Recurrent: per step and channel ``d*d`` (Abar m) + ``d`` (Bbar u) MACs. Parallel (FFT):
    reported as the recurrent count as well, since both compute the same map; the FFT's own
    arithmetic (~``5 N log2 N`` real flops per transform) is listed separately as ``fft_flops``.
    """
    macs = t * b * u * (order * order + order)
    out = {"dense_macs": macs, "spike_acs": 0, "state_size": b * u * order}
    if mode == "parallel":
        nfft = 2 * max(t, 1)
        per = 5 * nfft * math.log2(nfft)
        out["fft_flops"] = int(per * (b * u + order + b * u * order) + 6 * nfft * b * u * order)
    return out

