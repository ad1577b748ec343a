"""Synaptic delays for the feed-forward projections of the recurrent models (RSNN, EGRU).

With ``delay_taps`` K > 1 a projection ``Linear(I, O)`` becomes a causal dilated convolution
over time: the drive of output ``j`` at step ``t`` is ``b_j + sum_i sum_k W[j, i, k] x[t - (K-1-k)
d, i]`` (``d`` = ``delay_spacing``, zeros before the first step), i.e. every synapse weighs its
input at the K delays ``0, d, ..., (K-1) d`` steps. Learnt delays are what lifted SHD accuracy
in Hammouamri, Khalfaoui-Hassani & Masquelier 2023 ("Learning delays in spiking neural
networks using dilated convolutions with learnable spacings", ICLR 2024); they learn one
delay per synapse (a Gaussian-interpolated tap), this is the dense-tap form of the same idea;
:class:`LearntDelays` (RSNN ``delay_learn=True``) is their form, one weight and one learnt delay
per synapse on the same grid. K = 1 keeps the plain ``nn.Linear`` (and its state-dict keys).
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


def projection(n_in: int, n_out: int, taps: int, spacing: int, learn: bool = False,
               pos_lr_scale: float | None = None) -> nn.Module:
    """``nn.Linear`` for one tap, else ``nn.Conv1d`` with ``taps`` taps ``spacing`` apart
    (:class:`LearntDelays`, one learnt delay per synapse on that grid, with ``learn``; its
    positions train at ``pos_lr_scale`` x the lr, default :data:`POS_LR_SCALE`)."""
    if taps == 1:
        if learn:
            raise ValueError("learnt delays need delay_taps > 1 (the grid of delays to learn "
                             "on), got delay_taps 1")
        return nn.Linear(n_in, n_out)
    if learn:
        return LearntDelays(n_in, n_out, taps, spacing, pos_lr_scale)
    if pos_lr_scale is not None:
        raise ValueError(f"a delay position lr scale ({pos_lr_scale!r}) needs learnt delays "
                         f"(delay_learn=True); these taps are dense")
    return nn.Conv1d(n_in, n_out, taps, dilation=spacing)


# Learnt per-synapse delays as in Hammouamri, Khalfaoui-Hassani & Masquelier (ICLR 2024; their
# code github.com/Thvnvtos/SNN-delays, config.py): positions start uniform over the delay
# range, a Gaussian of width sigInit = max_delay // 3 taps spreads each synapse over the taps
# and shrinks exponentially to 0.23 by half of the epochs (final_epoch = epochs // 2,
# snn_delays.py decrease_sig), and the positions learn 150 x faster than the weights (lr_pos =
# 150 * lr_w). Where this differs: they keep sigma 0.23 to the end and round the positions
# after training, this goes hard (rounded) from half of the epochs on, so the second half
# trains the network that is deployed; they clamp the positions in place before every batch,
# this clamps in the forward pass with the gradient passed straight through; their positions
# follow their own cosine schedule, these the weights' schedule (x 150); the readout
# projection has no delays here. Their 0.15 taps per Adam step is 0.75 % of their 20-step delay
# range; a grid of K taps at a weights' lr L matches that rate with a scale of about 0.0075 (K -
# 1) / L (the RSNN's K 19 at 1e-3: 135; the EGRU's K 9 at 3e-3: 20, which spread its positions
# where 150 piled them at the grid's ends; benchmarks/RESULTS.md, "Learnt delays in the EGRU").
POS_LR_SCALE = 150.0
SIGMA_END = 0.23
HARD_FROM = 0.5


class LearntDelays(nn.Module):
    """One weight and one learnt delay per synapse, on the grid of a ``K``-tap, ``d``-spaced
    causal convolution (a drop-in for :func:`projection`'s ``nn.Conv1d``: ``weight`` is the
    ``[O, I, K]`` kernel it builds, tap ``k`` = delay ``(K-1-k) d`` steps).

    Each synapse ``i -> j`` has a weight ``w[j, i]`` and a position ``p[j, i]`` in ``[0,
    K-1]`` taps; its kernel is ``w`` times a normalised Gaussian of width ``sigma`` centred at
    ``p`` (differentiable in ``p``). :meth:`set_progress` (called by the training loop at every
    epoch) shrinks ``sigma`` from ``max(K // 3, 0.5)`` to 0.23 over the first half of the
    epochs; from then on the kernel is hard, ``w`` at tap ``round(p)`` only, so the trained
    network has one synapse per pair (not K) in the hardware mapping, the operation counts and
    the NIR export, and what is trained in the second half is what runs. ``sigma`` is a buffer
    (saved with the checkpoint, read once at load); 0 means hard. Change it through
    :meth:`set_progress` or ``load_state_dict``: the forward reads a host copy of it."""

    stride, padding, groups = (1,), (0,), 1

    def __init__(self, n_in: int, n_out: int, taps: int, spacing: int,
                 pos_lr_scale: float | None = None):
        super().__init__()
        taps, spacing = check(taps, spacing)
        if taps < 2:
            raise ValueError(f"LearntDelays needs taps >= 2, got {taps}")
        scale = POS_LR_SCALE if pos_lr_scale is None else pos_lr_scale
        if isinstance(scale, bool) or not (isinstance(scale, (int, float))
                                           and 0 < scale < float("inf")):
            raise ValueError(f"the delay positions' lr scale must be a number > 0, got "
                             f"{pos_lr_scale!r}")
        self.pos_lr_scale = float(scale)  # the training loop's lr for delay_pos: this x lr
        self.in_channels, self.out_channels = int(n_in), int(n_out)
        self.kernel_size, self.dilation = (taps,), (spacing,)
        self.sigma_start = max(taps // 3, 0.5)
        lin = nn.Linear(n_in, n_out)                  # the weights and bias of a Linear
        self.syn_weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.delay_pos = nn.Parameter(torch.rand(n_out, n_in) * (taps - 1))
        self.register_buffer("sigma", torch.tensor(float(self.sigma_start)))
        self._sigma = float(self.sigma_start)  # host copy: no device sync per forward

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sigma = float(self.sigma)  # one read at load (a checkpoint may be hard)

    def set_progress(self, epoch: int, epochs: int) -> None:
        """``sigma`` for epoch ``epoch`` (0-based) of ``epochs``: exponential decay from
        ``sigma_start`` to 0.23 over the first half, then 0 (hard)."""
        frac = epoch / max(int(epochs * HARD_FROM), 1)
        sig = 0.0 if frac >= 1 else self.sigma_start * (SIGMA_END / self.sigma_start) ** frac
        self.sigma.fill_(sig)
        self._sigma = float(sig)

    @property
    def hard(self) -> bool:
        """Whether the kernel is one tap per synapse (``sigma`` 0: the second half of training
        and after it)."""
        return self._sigma == 0

    def delays(self) -> torch.Tensor:
        """Each synapse's delay in steps ``[O, I]`` (its rounded position x spacing)."""
        return self._pos().detach().round().long() * self.dilation[0]

    def _pos(self) -> torch.Tensor:
        # clamped to the grid with the gradient passed straight through, so a position pushed
        # past an end can come back (a plain clamp has zero gradient there: stuck for good)
        p = self.delay_pos
        return p + (p.clamp(0, self.kernel_size[0] - 1) - p).detach()

    @property
    def weight(self) -> torch.Tensor:
        taps = self.kernel_size[0]
        pos = self._pos()
        lag = torch.arange(taps, device=pos.device, dtype=pos.dtype)
        if self._sigma > 0:
            g = torch.exp(-0.5 * ((lag - pos[..., None]) / self._sigma) ** 2)
            g = g / g.sum(-1, keepdim=True)
        else:
            g = nn.functional.one_hot(pos.detach().round().long(), taps).to(pos.dtype)
        return self.syn_weight[..., None] * g.flip(-1)               # tap k = lag K-1-k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv1d(x, self.weight, self.bias, dilation=self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, taps={self.kernel_size[0]}, "
                f"spacing={self.dilation[0]}, sigma={self._sigma:.3g}")


def causal(conv: nn.Conv1d, x: torch.Tensor, buf: torch.Tensor | None = None):
    """A ``Conv1d`` over time, causally: ``x [T, B, I]`` -> ``(y [T, B, O], buf)``; ``buf``
    ``[B, I, (k-1) dilation]`` holds the inputs before ``x`` (zeros at the start) and is
    returned for the next chunk. The conv is called as a module so that forward hooks (the
    operation counter's) see it."""
    history = (conv.kernel_size[0] - 1) * conv.dilation[0]
    xb = x.permute(1, 2, 0)                                              # [B, I, T]
    if buf is None:
        buf = xb.new_zeros(xb.shape[0], xb.shape[1], history)
    full = torch.cat([buf, xb], dim=2)
    return conv(full).permute(2, 0, 1), full[:, :, full.shape[2] - history:]


def apply(proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x [T, B, I]`` -> ``[T, B, O]`` through :func:`projection`'s module (causal in time)."""
    return proj(x) if isinstance(proj, nn.Linear) else causal(proj, x)[0]


def fan_out_steps(events_per_step: torch.Tensor, taps: int, spacing: int) -> int:
    """Sum over input steps ``s`` of ``events[s] * #{k < taps: s + k spacing < T}``: how many
    (event, delay) pairs reach an output step inside the sequence (each reaches every output
    unit of the projection once)."""
    t = events_per_step.shape[0]
    reach = torch.clamp((t - 1 - torch.arange(t, device=events_per_step.device)) // spacing + 1,
                        max=taps)
    return int((events_per_step.to(torch.int64) * reach).sum())


def synapse_fan_out(events: torch.Tensor, delay: torch.Tensor) -> int:
    """Sum over input steps ``s`` and inputs ``i`` of ``events[s, i] * #{j : s + delay[j, i]
    < T}``: the (event, synapse) pairs of a one-delay-per-synapse projection (``delay [O, I]``
    in steps, :meth:`LearntDelays.delays`) that reach an output step inside the sequence."""
    t, n_in = events.shape
    if tuple(delay.shape[1:]) != (n_in,):
        raise ValueError(f"delay {tuple(delay.shape)} does not match events {tuple(events.shape)}"
                         f" ([O, {n_in}] expected)")
    d = delay.detach().long().cpu()
    dmax = int(d.max()) if d.numel() else 0
    per = torch.zeros(n_in, dmax + 1, dtype=torch.int64)           # [I, delay]: synapses
    per.scatter_add_(1, d.t(), torch.ones_like(d.t()))
    within = per.cumsum(1)                    # [I, m]: synapses of input i with delay <= m
    last = torch.clamp(t - 1 - torch.arange(t), max=dmax)         # longest delay from step s
    return int((events.detach().long().cpu().t() * within[:, last]).sum())


class DelayedLinear(nn.Module):
    """A delayed projection as a layer of a :class:`spiking.Sequential` stack: ``y, buf =
    layer(x, buf=None)``, ``x`` ``[T, B, I]`` -> ``[T, B, O]``; ``buf`` ``[B, I, (K-1) d]``
    holds the last inputs (zeros at the start), so a sequence run in chunks gives the same
    output as in one piece. ``conv``: the :func:`projection` ``nn.Conv1d``.

    :meth:`synapses` lists it as synapses with delays, the form the SpiNNaker-like mapping
    takes (:func:`spiking.hardware.spinnaker.network_from_model`): tap ``k`` of ``W[j, i, :]``
    is the synapse ``i -> j`` delayed by ``(K-1-k) d`` steps."""

    stateful = True

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if not isinstance(conv, nn.Conv1d) or conv.groups != 1 or conv.stride != (1,) or (
                conv.padding != (0,)):
            raise TypeError(f"DelayedLinear wraps an nn.Conv1d with groups=1, stride 1 and no "
                            f"padding, got {conv!r}")
        self.conv = conv

    @property
    def taps(self) -> int:
        return self.conv.kernel_size[0]

    @property
    def spacing(self) -> int:
        return self.conv.dilation[0]

    @property
    def history(self) -> int:
        """Past steps the layer reads: ``(K-1) d``."""
        return (self.taps - 1) * self.spacing

    def forward(self, x: torch.Tensor, buf: torch.Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.conv.in_channels:
            raise ValueError(f"DelayedLinear expects [T, B, {self.conv.in_channels}], got "
                             f"{tuple(x.shape)}")
        return causal(self.conv, x, buf)

    @torch.no_grad()
    def synapses(self):
        """``(pre, post, weight, lag)`` numpy arrays of the non-zero taps, lag in steps."""
        w = self.conv.weight.detach().cpu().double()                  # [O, I, K]
        post, pre, k = (v.numpy() for v in torch.nonzero(w, as_tuple=True))
        lag = (self.taps - 1 - k) * self.spacing
        return pre, post, w.numpy()[post, pre, k], lag
