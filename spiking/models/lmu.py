r"""LMU layer (Voelker et al. 2019) with parallel (FFT) training and recurrent streaming.

Per time step t, for input ``x[t]`` ``[B, N]`` (memory math in :mod:`spiking.kernels.lmu`):

.. code-block:: text

    u[t] = W_u x[t] + b_u  (+ e_h h[t-1]     if hidden_feedback)       [B, U]
    m[t] = Abar m[t-1] + Bbar u[t]                                     [B, U, d]
    h[t] = f(W_x x[t] + W_m vec(m[t]) + b  (+ W_h h[t-1]  if hidden_feedback))   [B, H]

``hidden_feedback=True`` is the original LMU cell of Voelker et al. (hidden state feeds the
memory input and itself); it only runs recurrently. Without it (the default) the memory is
linear time-invariant in ``x`` and ``mode="parallel"`` computes all ``m[t]`` at once with an FFT
convolution, as in Chilkuri & Eliasmith 2021 (ICML, "Parallelizing Legendre Memory Unit
Training"); ``mode="recurrent"`` gives the same numbers one step at a time (``step`` streams).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from spiking.kernels import lmu as K
from spiking.models.registry import register_model

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda x: x}


class LMUCellState(NamedTuple):
    m: torch.Tensor  # [B, U, d]
    h: torch.Tensor  # [B, H]


class LMU(nn.Module):
    """``h, state = LMU(n_in, hidden, order, theta)(x, state=None)``; ``x`` ``[T, B, n_in]``.

    ``order`` is the memory order ``d``, ``theta`` the window in steps of ``dt`` (only
    ``dt/theta`` matters), ``n_memory`` the number ``U`` of memorised channels.
    """

    def __init__(self, input_size: int, hidden_size: int, order: int, theta: float, *,
                 n_memory: int = 1, dt: float = 1.0, hidden_feedback: bool = False,
                 activation: str = "tanh", mode: str = "parallel", batch_first: bool = False):
        super().__init__()
        if min(input_size, hidden_size, order, n_memory) < 1:
            raise ValueError(f"sizes must be >= 1, got input_size={input_size}, hidden_size="
                             f"{hidden_size}, order={order}, n_memory={n_memory}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if mode not in ("parallel", "recurrent"):
            raise ValueError(f"mode must be 'parallel' or 'recurrent', got {mode!r}")
        if hidden_feedback and mode == "parallel":
            raise ValueError("hidden_feedback=True makes the memory depend on h: only "
                             "mode='recurrent' can run it")
        self.order, self.theta, self.dt = int(order), float(theta), float(dt)
        self.hidden_size, self.n_memory = int(hidden_size), int(n_memory)
        self.hidden_feedback, self.mode, self.batch_first = hidden_feedback, mode, batch_first
        self.activation = activation
        abar, bbar = K.discretize(self.order, self.theta, self.dt)
        self.register_buffer("abar", abar.float())
        self.register_buffer("bbar", bbar.float())
        self.enc_x = nn.Linear(input_size, n_memory)
        self.w_x = nn.Linear(input_size, hidden_size)
        self.w_m = nn.Linear(n_memory * order, hidden_size, bias=False)
        if hidden_feedback:
            self.enc_h = nn.Linear(hidden_size, n_memory, bias=False)
            self.w_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self._h_cache: dict = {}

    def _impulse(self, n: int, x: torch.Tensor) -> torch.Tensor:
        key = (n, x.device, x.dtype)
        if key not in self._h_cache:
            self._h_cache = {key: K.impulse_response(
                self.abar.double(), self.bbar.double(), n).to(x.device, x.dtype)}
        return self._h_cache[key]

    def initial_state(self, x_t: torch.Tensor) -> LMUCellState:
        b = x_t.shape[0]
        return LMUCellState(x_t.new_zeros(b, self.n_memory, self.order),
                            x_t.new_zeros(b, self.hidden_size))

    def step(self, x_t: torch.Tensor, state: LMUCellState | None = None):
        """One step ``x_t`` ``[B, n_in]`` -> ``(h_t [B, H], LMUCellState)``."""
        if state is None:
            state = self.initial_state(x_t)
        u = self.enc_x(x_t)
        if self.hidden_feedback:
            u = u + self.enc_h(state.h)
        m, _ = K.step(u, K.LMUState(state.m), self.abar.to(x_t.dtype), self.bbar.to(x_t.dtype))
        pre = self.w_x(x_t) + self.w_m(m.flatten(1))
        if self.hidden_feedback:
            pre = pre + self.w_h(state.h)
        h = ACTIVATIONS[self.activation](pre)
        return h, LMUCellState(m, h)

    def forward(self, x: torch.Tensor, state: LMUCellState | None = None):
        if x.dim() != 3:
            raise ValueError(f"LMU expects [T, B, N] input, got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if self.mode == "recurrent":
            hs = []
            for t in range(x.shape[0]):
                h, state = self.step(x[t], state)
                hs.append(h)
            out = torch.stack(hs)
        else:
            u = self.enc_x(x)                                            # [T, B, U]
            mstate = None if state is None else K.LMUState(state.m)
            m, fin = K.parallel(u, mstate, self.abar.to(x.dtype), self.bbar.to(x.dtype),
                                self._impulse(x.shape[0], x))
            out = ACTIVATIONS[self.activation](self.w_x(x) + self.w_m(m.flatten(2)))
            state = LMUCellState(fin.m, out[-1])
        return (out.transpose(0, 1) if self.batch_first else out), state

    def op_counts(self, t: int, b: int) -> dict[str, int]:
        """Dense MACs of one ``[T, B]`` sequence (no spikes in a plain LMU)."""
        n_in = self.enc_x.in_features
        macs = t * b * (n_in * self.n_memory + n_in * self.hidden_size
                        + self.n_memory * self.order * self.hidden_size)
        if self.hidden_feedback:
            macs += t * b * (self.hidden_size * self.n_memory + self.hidden_size ** 2)
        mem = K.op_counts(t, b, self.n_memory, self.order)
        return {"dense_macs": macs + mem["dense_macs"], "spike_acs": 0,
                "params": sum(p.numel() for p in self.parameters())}


class LMUClassifier(nn.Module):
    """LMU layer + linear head on the last step's hidden state: ``logits = m(x [T, B, ...])``."""

    def __init__(self, input_shape, n_classes: int, *, hidden_size: int = 128, order: int = 64,
                 theta: float = 100.0, n_memory: int = 1, mode: str = "parallel"):
        super().__init__()
        n_in = 1
        for s in input_shape:
            n_in *= int(s)
        self.lmu = LMU(n_in, hidden_size, order, theta, n_memory=n_memory, mode=mode)
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor):
        h, _ = self.lmu(x.flatten(2))
        return self.head(h[-1])


def _factory(input_shape=(1,), n_classes: int = 10, **kw):
    return LMUClassifier(input_shape, n_classes, **kw)


register_model("lmu", _factory, overwrite=True)
