"""EGRU network (Subramoney et al., ICLR 2023): stacked event-based GRU layers + linear readout.

Architecture (``x`` ``[T, B, *input_shape]``, flattened to ``I`` inputs per step; camera frames
may first be sum-pooled over ``input_pool`` x ``input_pool`` pixels, audio channels in groups
of ``input_pool``; :func:`spiking.models.pooling.sum_pool`)::

    EGRULayer(I, H) -> Dropout -> EGRULayer(H, H) ... -> readout Linear(H, classes) applied to
    the last layer's output events y (graded, 0 when silent), reduced over time

``readout_reduce`` picks the reduction: ``"mean"`` (default; the logits of the time-mean of
y), ``"max"`` (the per-step logits ``Linear(y[t])`` maxed over time, the readout Cramer et al.
2020 use on SHD) or ``"last"`` (the logits of the last valid step).

With ``input_norm="batchnorm"`` each layer's drive ``W x + b`` is batch-normalised over
(time, batch) before the recurrence, as in :class:`spiking.models.rsnn.RSNN` (an affine map
per gate unit in eval mode, so it folds into ``W`` and ``b`` and adds no operations).

Each :class:`EGRULayer` owns ``W x + b`` (``nn.Linear(I, 3H)``, one matmul over all steps), the
recurrent ``weight_hh`` ``[3H, H]`` and the learnable per-unit ``threshold``; the recurrence is
:mod:`spiking.kernels.egru` (fused CPU / CUDA or the reference loop). Only events pass to the
next layer and step. The next layer's input matmul is dense here (the events are already
sparse; ``op_counts`` counts the event-driven form).

Activity regulariser: with ``activity_reg = lam > 0`` each layer's output passes through
:class:`ActivityRegularizer`, an identity whose backward adds the gradient of
``lam * mean(|y|)`` (an L1 penalty on the events), so any training loss gets it without the
training loop knowing. Returns ``ClassifierOutput(logits, {"egru<k>": event masks})``.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from spiking import surrogate as _surrogate
from spiking.kernels import egru as K
from spiking.models import delays
from spiking.models.pooling import pooled_size, sum_pool
from spiking.models.readout import REDUCTIONS, ClassifierOutput, readout_macs, time_readout
from spiking.models.registry import register_model

RECIPE = {"n_time_bins": 20, "epochs": 20, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4,
          "schedule": "onecycle", "grad_clip": 1.0,
          "model_args": {"hidden": [256], "threshold_init": 0.1, "dropout": 0.1}}

# Per-dataset parts merged over RECIPE by ``spiking train`` (spiking.training.config.recipe).
# N-MNIST: the setting of the 95 % row of benchmarks/RESULTS.md (issue 6, accuracy).
# SHD-format audio: the FSDD->SHD-format runs of benchmarks/RESULTS.md (issue 6, "readout and
# pooling"): two layers of 256, batch-normalised drive, 700 channels summed to 140,
# max-over-time readout, dropout 0.3, channel shifts of up to 8, 45 epochs; label smoothing
# 0.1 (RESULTS "Label smoothing, time dilation, longer schedule": 84.2 -> 86.2 % mean of
# seeds 0-1); synaptic delays, 5 taps 1 step apart (0-112 ms at 28 ms steps; RESULTS
# "Synaptic delays": 86.3 -> 90.1 %, mean of 3 seeds).
_AUDIO = {"n_time_bins": 50, "epochs": 45, "lr": 3e-3, "augment_shift": 8,
          "label_smoothing": 0.1,
          "model_args": {"hidden": [256, 256], "threshold_init": 0.1, "dropout": 0.3,
                         "input_norm": "batchnorm", "input_pool": 5, "readout_reduce": "max",
                         "delay_taps": 5, "delay_spacing": 1}}
DATASET_RECIPES = {
    ("egru", "nmnist"): {"augment_shift": 2,
                         "model_args": {"threshold_init": 0.2, "dropout": 0.3,
                                        "activity_reg": 0.5, "input_pool": 2}},
    ("egru", "fsdd-shd"): _AUDIO,
    ("egru", "shd"): _AUDIO,
}


class ActivityRegularizer(torch.autograd.Function):
    """Identity forward; backward adds ``lam * sign(y) / y.numel()`` (d/dy of lam*mean|y|)."""

    @staticmethod
    def forward(ctx, y, lam):
        ctx.save_for_backward(y)
        ctx.lam = lam
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g + ctx.lam * torch.sign(y) / max(y.numel(), 1), None


class EGRULayer(nn.Module):
    """One EGRU layer: ``y, state = layer(x, state=None)``, ``x`` ``[T, B, I]``."""

    def __init__(self, input_size: int, hidden_size: int, *, threshold_init: float = 0.1,
                 surrogate: str = "triangle", surrogate_alpha: float = K.TRIANGLE_ALPHA,
                 dampening: float = K.DAMPENING, learn_threshold: bool = True,
                 input_norm: str = "none", delay_taps: int = 1, delay_spacing: int = 1,
                 delay_learn: bool = False, delay_pos_lr_scale: float | None = None,
                 backend: str = "auto"):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, "
                             f"{hidden_size}")
        if input_norm not in ("none", "batchnorm"):
            raise ValueError(f"input_norm must be 'none' or 'batchnorm', got {input_norm!r}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        # Synaptic delays (delay_taps > 1): a causal dilated convolution over time
        # (spiking.models.delays); delay_learn: one weight and one learnt delay per synapse on
        # that grid instead (delays.LearntDelays, Hammouamri et al. 2023), the positions
        # trained at delay_pos_lr_scale x the lr (default delays.POS_LR_SCALE, 150).
        self.delay_taps, self.delay_spacing = delays.check(delay_taps, delay_spacing)
        self.delay_learn = bool(delay_learn)
        self.linear = delays.projection(input_size, 3 * hidden_size, self.delay_taps,
                                        self.delay_spacing, learn=self.delay_learn,
                                        pos_lr_scale=delay_pos_lr_scale)
        # Optional batch normalisation of the drive W x + b over (time, batch), per gate unit
        # (as the RSNN's ``input_norm``): sparse spike inputs then start at unit scale.
        self.norm = nn.BatchNorm1d(3 * hidden_size) if input_norm == "batchnorm" else None
        k = 1 / math.sqrt(hidden_size)  # torch.nn.GRU's init range U(-1/sqrt(H), 1/sqrt(H))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size).uniform_(-k, k))
        thr = torch.full((hidden_size,), float(threshold_init))
        self.threshold = nn.Parameter(thr) if learn_threshold else None
        if not learn_threshold:
            self.register_buffer("threshold_fixed", thr)
        self.surrogate = _surrogate.get(surrogate, surrogate_alpha)
        self.dampening = float(dampening)
        self.backend = backend

    def params(self) -> K.EGRUParams:
        thr = self.threshold if self.threshold is not None else self.threshold_fixed
        return K.EGRUParams(self.weight_hh, thr, self.surrogate, self.dampening)

    def forward(self, x: torch.Tensor, state: K.EGRUState | None = None, record: bool = False):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"EGRULayer expects [T, B, {self.input_size}], got {tuple(x.shape)}")
        wx = delays.apply(self.linear, x)
        if self.norm is not None:
            wx = self.norm(wx.reshape(-1, wx.shape[-1])).reshape(wx.shape)
        return K.run(wx, state, self.params(), backend=self.backend, record=record)


class EGRU(nn.Module):
    """Stacked EGRU classifier: ``logits, activity = EGRU(input_shape, n_classes)(x)``."""

    def __init__(self, input_shape, n_classes: int, hidden=(256,), *, threshold_init: float = 0.1,
                 dropout: float = 0.1, activity_reg: float = 0.0, surrogate: str = "triangle",
                 surrogate_alpha: float = K.TRIANGLE_ALPHA, dampening: float = K.DAMPENING,
                 input_pool: int = 1, input_norm: str = "none", readout_reduce: str = "mean",
                 delay_taps: int = 1, delay_spacing: int = 1, delay_learn: bool = False,
                 delay_pos_lr_scale: float | None = None, backend: str = "auto"):
        super().__init__()
        if readout_reduce not in REDUCTIONS:
            raise ValueError(f"readout_reduce must be one of {REDUCTIONS}, got "
                             f"{readout_reduce!r}")
        self.readout_reduce = readout_reduce
        shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(input_shape)
        self.input_pool = int(input_pool)
        hidden = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
        if not hidden or min(hidden) < 1 or n_classes < 2:
            raise ValueError(f"need hidden sizes >= 1 and n_classes >= 2, got {hidden}, "
                             f"{n_classes}")
        self.input_shape = shape
        self.activity_reg = float(activity_reg)
        n_in = pooled_size(shape, input_pool)
        sizes = [n_in, *hidden]
        self.layers = nn.ModuleList(
            EGRULayer(a, b, threshold_init=threshold_init, surrogate=surrogate,
                      surrogate_alpha=surrogate_alpha, dampening=dampening,
                      input_norm=input_norm, delay_taps=delay_taps,
                      delay_spacing=delay_spacing, delay_learn=delay_learn,
                      delay_pos_lr_scale=delay_pos_lr_scale, backend=backend)
            for a, b in itertools.pairwise(sizes))
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden[-1], n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> ClassifierOutput:
        if tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"EGRU expects [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(x.shape)}")
        h = self._inputs(x)
        activity = {}
        for k, layer in enumerate(self.layers):
            h, _ = layer(h)
            if self.activity_reg > 0 and self.training:
                h = ActivityRegularizer.apply(h, self.activity_reg)
            activity[f"egru{k}"] = (h.detach() != 0).to(h.dtype)
            h = self.dropout(h)
        return ClassifierOutput(time_readout(self.readout, h, self.readout_reduce, lengths),
                                activity)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's input ``[T, B, I]``: flattened, sum-pooled by ``input_pool``."""
        return sum_pool(x if x.is_floating_point() else x.float(), self.input_shape,
                        self.input_pool)

    def op_counts(self, t: int, b: int, activity: dict | None = None, *, output=None,
                  x: torch.Tensor | None = None) -> dict:
        """Dense and event-driven counts of every layer (kernels.egru.op_counts), summed.

        Pass the ``activity`` dict of a forward pass (or its ``output``) to get the
        event-driven figures: ``recurrent_macs_event`` (3H per event feeding a next step),
        ``spikes`` (all events); layer k > 0 reads layer k-1's events. With ``x`` the first
        layer's input events are counted too (``input_acs_event`` when ``x`` is binary,
        ``input_macs_event`` otherwise). With synaptic delays (``delay_taps`` K) a dense input
        step reads K input vectors, and an event reaches the layer once per delay that falls
        inside the sequence. Learnt delays (``delay_learn``) once hard have one weight per
        synapse: a dense step reads one input vector, and an event reaches each synapse once, at
        its own delay, if inside the sequence (while soft, during the first half of training,
        they count as the K dense taps they compute). ``readout_macs_dense``: the linear
        readout (once per sample for the ``"mean"`` and ``"last"`` reductions, once per step
        for ``"max"``)."""
        if activity is None and output is not None:
            activity = output[1]
        total: dict[str, int] = {}
        prev, binary = None, False          # input events [T, units] of the current layer
        if x is not None:
            h = self._inputs(x)
            prev = (h != 0).sum(1).flatten(1)
            binary = bool(((h == 0) | (h == 1)).all())
        spikes = 0
        for k, layer in enumerate(self.layers):
            ev = None
            if activity is not None:
                ev = int(activity[f"egru{k}"][:-1].sum())
                spikes += int(activity[f"egru{k}"].sum())
            hard = isinstance(layer.linear, delays.LearntDelays) and layer.linear.hard
            n_in = None if prev is None else int(prev.sum())
            if layer.delay_taps > 1 and prev is not None and not hard:  # at every delay
                n_in = delays.fan_out_steps(prev.sum(1), layer.delay_taps, layer.delay_spacing)
            c = K.op_counts((t, b, layer.hidden_size),
                            layer.input_size * (1 if hard else layer.delay_taps),
                            events=ev, input_events=n_in)
            c.pop("events", None)
            if hard and prev is not None:           # each synapse at its own delay
                c["input_macs_event"] = delays.synapse_fan_out(prev, layer.linear.delays())
            if k == 0 and binary and "input_macs_event" in c:
                c["input_acs_event"] = c.pop("input_macs_event")
            prev = None if activity is None else activity[f"egru{k}"].sum(1).flatten(1)
            for key, v in c.items():
                total[key] = total.get(key, 0) + v
        if activity is not None:
            total["spikes"] = spikes
        total["readout_macs_dense"] = readout_macs(self.readout, self.readout_reduce, t, b)
        return total


def build(input_shape, n_classes: int, **kw) -> EGRU:
    """Registry factory for ``spiking train --model egru``."""
    kw.pop("dt", None)
    return EGRU(input_shape, n_classes, **kw)


register_model("egru", build)
