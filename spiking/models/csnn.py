"""CSNN: a convolutional spiking network for event-camera frames (N-MNIST).

Architecture (input ``[T, B, 2, 34, 34]``, time folded into the batch for the stateless parts)::

    Conv2d(2, c1, 5) -> Pool(2) -> LIF
    Conv2d(c1, c2, 5) -> Pool(2) -> LIF
    Flatten -> Dropout -> Readout (Linear -> LI membrane mean over time, or LIF spike count)

``Pool`` is ``pool_kind``: ``"max"`` (``nn.MaxPool2d``, the default and the layout below),
``"avg"`` (``nn.AvgPool2d``) or ``"sum"`` (:class:`spiking.SumPool2d`). Average and sum pooling
are linear, so they are fixed synapses on neuromorphic hardware and NIR nodes; with them
:meth:`CSNN.to_sequential` gives the equivalent :class:`spiking.Sequential` that the NIR export
and the SpiNNaker-like mapping take. Max pooling has no such form.

This is the ``12C5-MP2-64C5-MP2-FC10`` layout of snnTorch tutorial 7 (Eshraghian et al. 2023,
"Training spiking neural networks using lessons from deep learning", Proc. IEEE) and of
Fang et al. 2021 (PLIF on N-MNIST, conv-pool-spike blocks), with a non-spiking LI readout
instead of spike counts, which gives a smooth loss from the first epoch.

Default recipe (``spiking train --model csnn --dataset nmnist``), see :data:`RECIPE`:
10 time bins over the ~300 ms recording (three saccades, Orchard et al. 2015), so
``dt = 30 ms``; ``tau_mem = 60 ms`` (per-bin decay exp(-0.5) ~= 0.61, close to snnTorch
tutorial 7's beta = 0.5); threshold 1, atan surrogate (alpha = 2, Fang et al. 2021);
channels 16 and 32; AdamW (Loshchilov & Hutter 2019) lr 5e-3, weight decay 1e-4, OneCycle
(Smith & Topin 2019), batch 32, 20 epochs, gradient clipping at 1.0, dropout 0.2 before the
readout, random translations by up to 2 pixels (the classic (N-)MNIST augmentation).
Results on the 1,000/100 genuine subset are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch
from torch import nn

from spiking.models.readout import ClassifierOutput, Readout
from spiking.models.registry import register_model
from spiking.neurons import LIF
from spiking.pooling import SumPool2d
from spiking.sequential import Sequential

POOL_KINDS = ("max", "avg", "sum")

# The recipe the CLI uses for `--model csnn` (overridable by config file or flags).
RECIPE = {
    "n_time_bins": 10, "epochs": 20, "batch_size": 32, "lr": 5e-3, "weight_decay": 1e-4,
    "schedule": "onecycle", "grad_clip": 1.0, "augment_shift": 2,
    "model_args": {"channels": [16, 32], "tau_mem": 60e-3, "readout": "li",
                   "readout_reduce": "mean", "dropout": 0.2},
}


class CSNN(nn.Module):
    """Convolutional SNN: ``logits, activity = CSNN()(x)`` with ``x`` ``[T, B, C, H, W]``.

    ``activity`` maps ``"conv1"``, ``"conv2"`` (and ``"readout"`` for the count readout) to
    spike tensors ``[T, B, ...]``. ``dt`` is the time-bin width in seconds; ``tau_mem`` the
    membrane time constant of the hidden LIF layers; ``pool_kind`` the pooling (``"max"``,
    ``"avg"``, ``"sum"``; see the module docstring).
    """

    def __init__(self, in_channels: int = 2, n_classes: int = 10, input_size=(34, 34), *,
                 channels=(12, 32), kernel_size: int = 5, pool: int = 2,
                 tau_mem: float = 60e-3, threshold: float = 1.0, dt: float = 30e-3,
                 readout: str = "li", readout_reduce: str = "mean",
                 readout_tau: float | None = None, dropout: float = 0.2,
                 surrogate: str = "atan", learn_tau: bool = False, backend: str = "auto",
                 pool_kind: str = "max"):
        super().__init__()
        if pool_kind not in POOL_KINDS:
            raise ValueError(f"pool_kind must be one of {POOL_KINDS}, got {pool_kind!r}")
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"channels must be two positive ints, got {channels!r}")
        h, w = (int(s) for s in input_size)
        if in_channels < 1 or n_classes < 2:
            raise ValueError(f"need in_channels >= 1 and n_classes >= 2, got {in_channels}, "
                             f"{n_classes}")
        c1, c2 = (int(c) for c in channels)
        self.input_shape = (int(in_channels), h, w)
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size)
        self.pool_kind, self.pool_size = pool_kind, int(pool)
        self.pool = self._make_pool()
        for _ in range(2):
            h, w = (h - kernel_size + 1) // pool, (w - kernel_size + 1) // pool
        if h < 1 or w < 1:
            raise ValueError(f"input_size {tuple(input_size)} is too small for two "
                             f"conv{kernel_size}-pool{pool} blocks")
        kw = {"tau_mem": tau_mem, "threshold": threshold, "dt": dt, "surrogate": surrogate,
                  "learn_tau": learn_tau, "backend": backend}
        self.lif1 = LIF(**kw)
        self.lif2 = LIF(**kw)
        self.dropout = nn.Dropout(dropout)
        self.readout = Readout(c2 * h * w, n_classes, kind=readout, reduce=readout_reduce,
                               tau_mem=readout_tau or tau_mem, dt=dt, surrogate=surrogate,
                               backend=backend)

    def _make_pool(self) -> nn.Module:
        k = self.pool_size
        return {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "sum": SumPool2d}[self.pool_kind](k)

    def to_sequential(self) -> Sequential:
        """The network as a :class:`spiking.Sequential` sharing this model's modules (weights,
        neurons)::

            Conv2d, Pool, LIF, Conv2d, Pool, LIF, Flatten, Linear (readout.fc), readout neuron

        for the NIR export and the SpiNNaker-like mapping (:mod:`spiking.hardware`), which
        take layer stacks. It computes what ``self.eval()`` computes, with these differences:

        - its output is the readout neuron's output ``[T, B, classes]`` (the LI membrane, or
          the LIF spikes of the ``"count"`` readout); the logits are the readout's
          post-processing of it, ``self.readout.logits(out)[0]`` (mean / max / last of the
          membrane over time, or the spike count), which is not part of the network;
        - dropout is left out (the identity in eval mode; training needs ``self``);
        - padded steps (``lengths``) are not masked;
        - the pooling layers are new instances (pooling has no parameters).

        Raises TypeError for ``pool_kind="max"``: max pooling is neither a NIR node nor a
        synaptic projection, so such a CSNN has no NIR / SpiNNaker-like mapping; train one
        with ``pool_kind="avg"`` or ``"sum"``.
        """
        if getattr(self, "pool_kind", "max") == "max":   # (pickles from before pool_kind)
            raise TypeError("CSNN with max pooling has no NIR / SpiNNaker-like mapping (no "
                            "mapping for max pooling: neither a NIR node nor fixed synapses); "
                            "use a CSNN with pool_kind='avg' or 'sum'")
        return Sequential(self.conv1, self._make_pool(), self.lif1,
                          self.conv2, self._make_pool(), self.lif2,
                          nn.Flatten(), self.readout.fc, self.readout.neuron)

    def _conv(self, conv, x):
        t, b = x.shape[:2]
        y = self.pool(conv(x.reshape(t * b, *x.shape[2:])))
        return y.reshape(t, b, *y.shape[1:])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> ClassifierOutput:
        if x.dim() != 5 or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"CSNN expects [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(x.shape)}")
        s1, _ = self.lif1(self._conv(self.conv1, x))
        s2, _ = self.lif2(self._conv(self.conv2, s1))
        feats = self.dropout(s2.flatten(2))
        logits, out_spikes = self.readout(feats, lengths)
        activity = {"conv1": s1, "conv2": s2}
        if out_spikes is not None:
            activity["readout"] = out_spikes
        return ClassifierOutput(logits, activity)


def _factory(input_shape=(2, 34, 34), n_classes: int = 10, **kw) -> CSNN:
    if len(input_shape) != 3:
        raise ValueError(f"csnn needs camera frames (channels, height, width) per time step, "
                         f"got input shape {tuple(input_shape)}")
    return CSNN(int(input_shape[0]), n_classes, tuple(input_shape[1:]), **kw)


register_model("csnn", _factory, overwrite=True)
