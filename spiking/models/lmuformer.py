r"""LMUFormer and spiking LMUFormer (Liu, Datta, Beerel et al. 2024, arXiv 2402.04882).

Input ``x [T, B, F]`` (features per time step; N-MNIST frames are flattened, optionally after
``spatial_pool`` x ``spatial_pool`` sum-pooling). Per the paper's Fig. 1, with every
convolution *causal* over time (left padding), so the network can stream:

.. code-block:: text

    patch embedding:  for each of `embed_layers`:  z = act(BN(CausalConv1d_k(z)))    F -> D
    block (x n_blocks):
        token mixer:  u = W_u x;  m = LMU memory of u (order d, window theta; kernels/lmu.py)
                      x = x + act(BN(W_m vec(m) + W_x x))
        channel mixer: x = x + act(BN(W_2 act(BN(W_1 x))))       (1x1 convs, D -> r D -> D)
    readout:          logits[t] = W_head (1/(t+1)) sum_{s<=t} x[s]     (a prediction per step)

``act`` is GELU in LMUFormer and a LIF neuron (``spiking.LIF``; multiplicative-free binary
outputs) in the spiking LMUFormer, where patch embedding, token-mixer output and channel
mixer spike. BatchNorm normalises over (batch, time) in training; in eval it is a per-channel
affine map, so streaming is exact in ``model.eval()``.

Modes that agree (tests compare them): ``mode="parallel"`` (the memory by FFT convolution,
Chilkuri & Eliasmith 2021; LIF and convs over the whole sequence) and ``mode="recurrent"``
(one step at a time with state: conv input buffers, LMU memory, LIF states, running readout
sum), so after seeing a fraction of the sequence a prediction is already available: the
paper's "sequence length reduction" study (:func:`accuracy_vs_fraction`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from spiking.kernels import lmu as K
from spiking.models import delays
from spiking.models.registry import register_model
from spiking.neurons import LIF


class LMUFormerState(NamedTuple):
    conv: tuple          # per causal conv: last k-1 inputs [B, C, k-1]
    mem: tuple           # per block: LMU memory [B, U, d]
    lif: tuple           # per spiking activation: LIFState or None
    readout: torch.Tensor  # running sum of features [B, D]
    steps: int


class CausalConv1d(nn.Conv1d):
    """Conv1d over time with ``k-1`` steps of left context from ``buf`` (zeros at the start)."""

    def __init__(self, c_in, c_out, k):
        super().__init__(c_in, c_out, k)
        self.k = k

    def run(self, x: torch.Tensor, buf: torch.Tensor | None):
        """``x [T, B, C]`` -> ``(y [T, B, C_out], new buf [B, C, k-1])``."""
        return delays.causal(self, x, buf)


class _Act(nn.Module):
    """GELU, or a LIF layer (spiking) with the SpikeGPT/spikingjelly tau=2 parameterisation."""

    def __init__(self, spiking: bool, lif_kwargs: dict):
        super().__init__()
        self.spiking = spiking
        if spiking:
            kw = {"tau_mem": 2.0, "dt": 1.0, "discretization": "euler", "normalize_input": True,
                      "reset": "zero", "threshold": 1.0, "surrogate": "atan"}
            kw.update(lif_kwargs)
            self.lif = LIF(**kw)

    def run(self, x, st):
        if not self.spiking:
            return torch.nn.functional.gelu(x), None
        return self.lif(x, st)


def _bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class LMUFormer(nn.Module):
    """``logits, state = LMUFormer(n_in, n_classes)(x [T, B, n_in], state=None)``.

    ``logits`` is ``[T, B, n_classes]`` (the running-mean readout at every step; the
    sequence's prediction is ``logits[-1]``).
    """

    def __init__(self, n_in: int, n_classes: int, *, dim: int = 64, n_blocks: int = 1,
                 embed_layers: int = 2, kernel_size: int = 3, order: int = 16,
                 theta: float = 32.0, n_memory: int | None = None, mlp_ratio: int = 2,
                 spiking: bool = False, lif_kwargs: dict | None = None, dropout: float = 0.0,
                 mode: str = "parallel"):
        super().__init__()
        if min(n_in, n_classes, dim, n_blocks, embed_layers, kernel_size, order) < 1:
            raise ValueError("LMUFormer sizes must all be >= 1")
        if mode not in ("parallel", "recurrent"):
            raise ValueError(f"mode must be 'parallel' or 'recurrent', got {mode!r}")
        self.spiking, self.mode, self.order = spiking, mode, int(order)
        self.n_memory = int(n_memory or dim)
        lk = lif_kwargs or {}
        self.convs = nn.ModuleList(CausalConv1d(n_in if i == 0 else dim, dim, kernel_size)
                                   for i in range(embed_layers))
        self.conv_bn = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(embed_layers))
        self.acts = nn.ModuleList(_Act(spiking, lk) for _ in range(embed_layers + 3 * n_blocks))
        abar, bbar = K.discretize(self.order, theta)
        self.register_buffer("abar", abar.float())
        self.register_buffer("bbar", bbar.float())
        self.w_u = nn.ModuleList(nn.Linear(dim, self.n_memory) for _ in range(n_blocks))
        self.w_m = nn.ModuleList(nn.Linear(self.n_memory * self.order, dim, bias=False)
                                 for _ in range(n_blocks))
        self.w_x = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_blocks))
        self.tm_bn = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(n_blocks))
        self.fc1 = nn.ModuleList(nn.Linear(dim, dim * mlp_ratio) for _ in range(n_blocks))
        self.bn1 = nn.ModuleList(nn.BatchNorm1d(dim * mlp_ratio) for _ in range(n_blocks))
        self.fc2 = nn.ModuleList(nn.Linear(dim * mlp_ratio, dim) for _ in range(n_blocks))
        self.bn2 = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(n_blocks))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)
        self._h: dict = {}

    def _impulse(self, n, x):
        key = (n, x.device, x.dtype)
        if key not in self._h:
            self._h = {key: K.impulse_response(self.abar.double(), self.bbar.double(), n)
                       .to(x.device, x.dtype)}
        return self._h[key]

    def _chunk(self, x: torch.Tensor, st: LMUFormerState | None, parallel: bool):
        """Run ``x [T, B, F]`` from state ``st``; returns (features [T, B, D], new state)."""
        conv_st, mem_st, lif_st = [], [], []
        lif_in = st.lif if st is not None else (None,) * len(self.acts)
        ai = 0

        def act(z):
            nonlocal ai
            out, s = self.acts[ai].run(z, lif_in[ai])
            lif_st.append(s)
            ai += 1
            return out

        z = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.conv_bn)):
            z, buf = conv.run(z, st.conv[i] if st is not None else None)
            conv_st.append(buf)
            z = act(_bn(bn, z))
        for b in range(len(self.w_u)):
            u = self.w_u[b](z)
            m0 = st.mem[b] if st is not None else None
            abar, bbar = self.abar.to(z.dtype), self.bbar.to(z.dtype)
            if parallel:
                m, fin = K.parallel(u, None if m0 is None else K.LMUState(m0), abar, bbar,
                                    self._impulse(z.shape[0], z))
            else:
                m, fin = K.reference(u, K.LMUState(m0) if m0 is not None else
                                     K.initial_state(u[0], self.order), abar, bbar)
            mem_st.append(fin.m)
            z = z + self.drop(act(_bn(self.tm_bn[b], self.w_m[b](m.flatten(2)) + self.w_x[b](z))))
            hdn = act(_bn(self.bn1[b], self.fc1[b](z)))
            z = z + self.drop(act(_bn(self.bn2[b], self.fc2[b](hdn))))
        return z, (conv_st, mem_st, lif_st)

    def forward(self, x: torch.Tensor, state: LMUFormerState | None = None):
        if x.dim() != 3:
            raise ValueError(f"LMUFormer expects [T, B, F] input, got shape {tuple(x.shape)}")
        if self.mode == "parallel":
            feats, (cs, ms, ls) = self._chunk(x, state, parallel=True)
        else:
            outs, st = [], state
            for t in range(x.shape[0]):
                f, (cs, ms, ls) = self._chunk(x[t:t + 1], st, parallel=False)
                st = LMUFormerState(tuple(cs), tuple(ms), tuple(ls),
                                    st.readout if st is not None else None, 0)
                outs.append(f)
            feats = torch.cat(outs)
        prev = state.readout if state is not None else feats.new_zeros(feats.shape[1:])
        n0 = state.steps if state is not None else 0
        csum = prev + torch.cumsum(feats, 0)
        count = torch.arange(n0 + 1, n0 + feats.shape[0] + 1, device=x.device,
                             dtype=feats.dtype)[:, None, None]
        logits = self.head(csum / count)
        new = LMUFormerState(tuple(cs), tuple(ms), tuple(ls), csum[-1],
                             n0 + feats.shape[0])
        return logits, new

    def extra_op_counts(self, x: torch.Tensor, state=None) -> dict:
        """The LMU memory updates of a forward over ``x [T, B, F]`` (dense MACs, computed
        outside any child module), for :func:`spiking.hardware.counting.count`."""
        t, b = x.shape[:2]
        return {"memory_macs_dense": len(self.w_u) * K.op_counts(
            int(t), int(b), self.n_memory, self.order)["dense_macs"]}

    def op_counts(self, x: torch.Tensor) -> dict:
        """Dense MACs vs spike-driven accumulates of one forward pass over ``x [T, B, F]``.

        A layer whose input is binary spikes (spiking variant) costs ``nnz(input) * fan_out``
        accumulates; any other layer ``T * B * fan_in * fan_out`` MACs (convs: times k). The
        LMU memory update is dense (``kernels.lmu.op_counts``). ``params`` and ``flops``
        (= 2 * all MACs of the dense equivalent) give LMUFormer-style counts.
        """
        inputs: dict = {}
        hooks = [m.register_forward_hook(lambda mod, i, o: inputs.setdefault(mod, []).append(
            i[0].detach())) for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
        try:
            with torch.no_grad():
                self(x)
        finally:
            for h in hooks:
                h.remove()
        dense = acs = equiv = 0
        for mod, ins in inputs.items():
            k = mod.kernel_size[0] if isinstance(mod, nn.Conv1d) else 1
            fan_out = mod.out_channels if isinstance(mod, nn.Conv1d) else mod.out_features
            for t in ins:
                if isinstance(mod, nn.Conv1d):                      # [B, C, T + k - 1]
                    full = t.shape[0] * t.shape[1] * (t.shape[2] - k + 1) * k * fan_out
                else:
                    full = t.numel() * fan_out
                equiv += full
                binary = self.spiking and bool(((t == 0) | (t == 1)).all())
                if binary:   # each input spike adds one weight column (per tap it reaches)
                    acs += int((t != 0).sum()) * (k if isinstance(mod, nn.Conv1d) else 1) \
                        * fan_out
                else:
                    dense += full
        mem = self.extra_op_counts(x)["memory_macs_dense"]
        return {"dense_macs": dense + mem, "spike_acs": acs,
                "dense_equivalent_macs": equiv + mem, "flops": 2 * (equiv + mem),
                "ratio": (equiv + mem) / max(dense + mem + acs, 1),
                "params": sum(p.numel() for p in self.parameters())}


class LMUFormerClassifier(nn.Module):
    """Registry wrapper: ``x [T, B, *input_shape]`` -> ``logits [B, n_classes]`` (last step).

    Image-like inputs ``(C, H, W)`` are sum-pooled ``spatial_pool`` x ``spatial_pool``."""

    def __init__(self, input_shape, n_classes: int, *, spatial_pool: int = 1, **kw):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        self.pool = int(spatial_pool) if len(shape) == 3 else 1
        if self.pool > 1:
            shape = (shape[0], shape[1] // self.pool, shape[2] // self.pool)
        self.net = LMUFormer(math.prod(shape), n_classes, **kw)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            t, b = x.shape[:2]
            x = torch.nn.functional.avg_pool2d(x.flatten(0, 1), self.pool) * self.pool ** 2
            x = x.reshape(t, b, *x.shape[1:])
        return x.flatten(2)

    def forward(self, x: torch.Tensor, all_steps: bool = False):
        logits, _ = self.net(self.features(x))
        return logits if all_steps else logits[-1]


@torch.no_grad()
def accuracy_vs_fraction(model: LMUFormerClassifier, loader, fractions=(0.25, 0.5, 0.75, 1.0)):
    """Accuracy when only the first ``fraction`` of each sequence has been seen (the streaming
    readout at that step), over a loader of ``(x [T, B, ...], y)``."""
    model.eval()
    correct = {f: 0 for f in fractions}
    total = 0
    for x, y in loader:
        lg = model(x, all_steps=True)
        t = lg.shape[0]
        for f in fractions:
            idx = max(1, round(f * t)) - 1
            correct[f] += int((lg[idx].argmax(-1) == y).sum())
        total += y.numel()
    return {f: correct[f] / max(total, 1) for f in fractions}


def _factory(spiking: bool):
    def make(input_shape=(1,), n_classes: int = 10, **kw):
        return LMUFormerClassifier(input_shape, n_classes, spiking=spiking, **kw)
    return make


register_model("lmuformer", _factory(False), overwrite=True)
register_model("spiking-lmuformer", _factory(True), overwrite=True)
