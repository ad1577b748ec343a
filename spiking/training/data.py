"""Datasets by name for training: readers -> binned frames held in memory.

=============  ===========================================================  ==================
name           what                                                         binning
=============  ===========================================================  ==================
``nmnist``     genuine N-MNIST (:class:`spiking.datasets.NMNIST`)           ``n_time_bins``
               from ``--data-root`` / ``$SPIKING_NMNIST_ROOT`` / ...        per recording
``digits``     the embedded default: UCI digits recorded by the emulated    same as nmnist
               event camera (:func:`spiking.datasets.embedded.ensure`)
``shd``        real SHD files ``shd_train.h5`` / ``shd_test.h5``            fixed span 1.4 s
``fsdd-shd``   FSDD audio converted to SHD-format spikes: ``--data-root``    fixed span 1.4 s
               holds ``SHD/shd_{train,test}.h5``; when absent they are built
               there (default ``<user cache>/fsdd-shd``) by
               :func:`spiking.datasets.audio.build_fsdd_shd`; a root that
               holds the recordings (``fsdd/``) is read, the files are
               built in the user cache
=============  ===========================================================  ==================

Camera recordings are split into ``n_time_bins`` equal bins per recording (tonic ``ToFrame``);
their nominal length is 0.3 s (three ~100 ms saccades, Orchard et al. 2015), so the model's
``dt`` is ``0.3 / n_time_bins``. Audio spikes are binned over a fixed 1.4 s span (the span
used by the SHD tutorial of Zenke & Cramer's spytorch, which covers SHD's longest digits), so
every sample has the same length and ``dt = 1.4 / n_time_bins``.

Binned frames go through :class:`spiking.datasets.BinnedDataset`'s disk cache and are then
held in memory as one tensor (uint8 when every count fits), which is what makes epochs on a
2-core CPU cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CAMERA_DURATION_S = 0.3   # Orchard et al. 2015: three saccades of ~100 ms
AUDIO_SPAN_S = 1.4        # spytorch SHD tutorial (Zenke & Cramer): max_time = 1.4 s
AUDIO_SPAN_US = int(AUDIO_SPAN_S * 1e6)


@dataclass
class Split:
    x: torch.Tensor        # [N, T, ...] uint8 or float32 counts
    y: torch.Tensor        # [N] int64

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_index(self) -> dict:
        """``{label: LongTensor of the sample indices with that label}`` (cached)."""
        cached = getattr(self, "_by_class", None)
        if cached is None or cached[0] is not self.y:
            by = {int(c): torch.nonzero(self.y == c).flatten() for c in torch.unique(self.y)}
            cached = (self.y, by)
            self._by_class = cached
        return cached[1]

    def batch(self, idx, device, augment_shift: int = 0, augment_dilate: float = 0.0,
              augment_blend: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Time-first float batch ``[T, B, ...]`` and labels for sample indices `idx`."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        x = self.x[idx].to(torch.float32)
        if augment_blend:
            x = random_blend(x, self.y[idx], self, augment_blend)
        if augment_shift:
            x = random_shift(x, augment_shift)
        if augment_dilate:
            x = random_dilate(x, augment_dilate)
        return x.transpose(0, 1).contiguous().to(device), self.y[idx].to(device)


@dataclass
class Data:
    train: Split
    test: Split
    input_shape: tuple
    n_classes: int
    classes: list
    dt: float
    description: str
    val: Split | None = None   # held out of the training split (``val_fraction``)


def random_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Translate each sample by a random offset in ±`shift`: camera frames ``[B, T, C, H, W]``
    in (dy, dx), audio spikes ``[B, T, channels]`` along the cochlea channels.

    Uses the global torch RNG (saved in checkpoints). Translation is the classic augmentation
    for (N-)MNIST; for spike-encoded audio a shift of the channel axis models a different
    voice pitch/formant position (the "shift" augmentation of Nowotny et al. 2022, "Loss shaping
    enhances exact gradient learning with EventProp in spiking neural networks", on SHD).
    Entries moved in from outside are zero.
    """
    if x.dim() == 3:
        b, _, c = x.shape
        pad = torch.nn.functional.pad(x, (shift, shift))
        off = torch.randint(0, 2 * shift + 1, (b,))
        return torch.stack([pad[k, :, off[k]:off[k] + c] for k in range(b)])
    if x.dim() != 5:
        raise ValueError(f"augment_shift needs camera frames [B, T, C, H, W] or audio spikes "
                         f"[B, T, channels], got {tuple(x.shape)}")
    b, _, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    off = torch.randint(0, 2 * shift + 1, (b, 2))
    return torch.stack([pad[k, ..., off[k, 0]:off[k, 0] + h, off[k, 1]:off[k, 1] + w]
                        for k in range(b)])


def random_dilate(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Stretch or compress each sample in time by a factor ``f`` drawn log-uniformly from
    ``[1 - amount, 1 + amount]``: binned spikes ``[B, T, ...]`` (audio or camera frames).

    The event-level form moves a spike at time ``t`` to ``f t`` (the "random_dilate"
    augmentation of the EventProp SHD scripts of Nowotny, Turner & Knight, "Loss shaping
    enhances exact gradient learning with EventProp in spiking neural networks", whose SHD
    configurations use factors 0.9-1.1); on bins, input bin ``k`` (centre ``k + 1/2``) is added
    to output bin ``floor(f (k + 1/2))``. Counts are kept (a compressed sample has bins that
    merge, a stretched one empty bins) except those pushed past the last bin, which are
    dropped. Uses the global torch RNG (saved in checkpoints).
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"augment_dilate must be in [0, 1), got {amount!r}")
    if x.dim() < 2:
        raise ValueError(f"augment_dilate needs binned samples [B, T, ...], got "
                         f"{tuple(x.shape)}")
    b, t = x.shape[:2]
    lo, hi = math.log(1.0 - amount), math.log(1.0 + amount)
    f = torch.exp(lo + (hi - lo) * torch.rand(b, dtype=torch.float64))
    centre = torch.arange(t, dtype=torch.float64) + 0.5
    dest = torch.floor(f[:, None] * centre[None, :]).long()            # [B, T]
    keep = dest < t
    flat = x.reshape(b, t, -1)
    out = torch.zeros_like(flat)
    src = flat * keep[:, :, None].to(flat.dtype)
    out.scatter_add_(1, dest.clamp(max=t - 1)[:, :, None].expand_as(flat), src)
    return out.reshape(x.shape)


def _time_centre(x: torch.Tensor) -> torch.Tensor:
    """Centre of mass along time (bins) of each sample of ``[B, T, ...]`` (0 when empty)."""
    per_t = x.reshape(x.shape[0], x.shape[1], -1).sum(-1)                 # [B, T]
    t = torch.arange(x.shape[1], dtype=per_t.dtype)
    return (per_t * t).sum(1) / per_t.sum(1).clamp(min=1e-12)


def _shift_time(x: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """Move each sample of ``[B, T, ...]`` later by ``by[b]`` bins (earlier when negative);
    bins moved in are empty, bins moved past either end are dropped."""
    b, t = x.shape[:2]
    src = torch.arange(t)[None, :] - by[:, None]                            # [B, T]
    ok = (src >= 0) & (src < t)
    out = x[torch.arange(b)[:, None], src.clamp(0, t - 1)]
    return out * ok.reshape(b, t, *([1] * (x.dim() - 2))).to(x.dtype)


def random_blend(x: torch.Tensor, y: torch.Tensor, pool: Split, prob: float) -> torch.Tensor:
    """Replace each sample of ``x`` ``[B, T, ...]`` (labels ``y``), with probability ``prob``,
    by a blend with a random sample of the same class drawn from ``pool``.

    The partner is moved in time so that both centres of mass (in bins) coincide, then each
    spike of either sample is kept with probability 1/2 (binomial thinning of the counts), so
    the blend has on average the spike count of one sample and the timing and channels of
    both. This is the binned form of the "blend" augmentation of Nowotny, Turner & Knight,
    "Loss shaping enhances exact gradient learning with EventProp in spiking neural networks"
    (2022), used there on SHD with two samples mixed at probabilities 0.5 / 0.5. Uses the
    global torch RNG (saved in checkpoints).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"augment_blend must be in [0, 1], got {prob!r}")
    if x.dim() < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"augment_blend needs binned samples [B, T, ...] and [B] labels, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    pick = torch.rand(x.shape[0]) < prob
    if not bool(pick.any()):
        return x
    by_class = pool.class_index()
    rows = torch.nonzero(pick).flatten()
    partner = torch.empty(len(rows), dtype=torch.long)
    for k, r in enumerate(rows.tolist()):
        members = by_class[int(y[r])]
        partner[k] = members[torch.randint(len(members), (1,))]
    a = x[rows]
    b = pool.x[partner].to(x.dtype)
    shift = torch.round(_time_centre(a) - _time_centre(b)).long()
    b = _shift_time(b, shift)
    half = torch.full_like(a, 0.5)
    out = x.clone()
    out[rows] = torch.binomial(a, half) + torch.binomial(b, half)
    return out


def balanced_subset(targets, n: int | None) -> np.ndarray:
    """Indices of the first ``ceil(n / classes)`` samples of each class (deterministic)."""
    targets = np.asarray(targets)
    if n is None or n >= len(targets):
        return np.arange(len(targets))
    classes = np.unique(targets)
    per = -(-n // len(classes))
    keep = np.concatenate([np.flatnonzero(targets == c)[:per] for c in classes])
    return np.sort(keep)[:n] if len(keep) > n else np.sort(keep)


def validation_indices(targets, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified random ``fraction`` of the samples (at least one
    per class that has two or more samples), drawn with ``seed``: the validation part of a
    training split; the rest stays for training."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1) if fraction > 0 else 0
        keep.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _materialize(binned, indices, desc: str, progress: bool) -> Split:
    xs, ys = [], []
    it = indices
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(indices, desc=f"binning {desc}", leave=False)
    for i in it:
        fr, label = binned[int(i)]
        xs.append(torch.as_tensor(fr))
        ys.append(int(label))
    x = torch.stack(xs)
    if x.numel() and float(x.min()) >= 0 and float(x.max()) <= 255 and torch.equal(x, x.round()):
        x = x.to(torch.uint8)
    return Split(x, torch.tensor(ys, dtype=torch.long))


def _readers(cfg):
    from spiking import datasets as D

    name = cfg.dataset
    if name == "nmnist":
        return D.NMNIST(cfg.data_root, train=True), D.NMNIST(cfg.data_root, train=False), \
            "N-MNIST (genuine recordings)"
    if name == "digits":
        from spiking.datasets import embedded

        root = embedded.ensure(cfg.data_root)
        return D.NMNIST(root, train=True), D.NMNIST(root, train=False), \
            "UCI digits recorded by the emulated event camera (not N-MNIST)"
    if name == "shd":
        return D.SHD(cfg.data_root, train=True), D.SHD(cfg.data_root, train=False), \
            "SHD (Spiking Heidelberg Digits)"
    if name == "fsdd-shd":
        from spiking.datasets import audio
        from spiking.datasets.locate import cache_dir

        def built(r: Path) -> bool:
            return all((r / "SHD" / f"shd_{s}.h5").is_file() for s in ("train", "test"))

        root = Path(cfg.data_root) if cfg.data_root else cache_dir() / "fsdd-shd"
        src = None
        if cfg.data_root and not built(root) and (root / "fsdd").is_dir():
            # a data folder holding the FSDD recordings (e.g. ../shared/data): convert them
            # into the user cache, never into the data folder itself
            src, root = root / "fsdd", cache_dir() / "fsdd-shd"
        if not built(root):
            audio.build_fsdd_shd(src=src, out=root, progress=cfg.progress)
        return D.SHD(root, train=True), D.SHD(root, train=False), \
            "FSDD audio converted to SHD-format spikes (not SHD)"
    raise ValueError(f"unknown dataset {name!r}")


def load(cfg, progress: bool = False, train: bool = True) -> Data:
    """Read, bin (through the disk cache) and hold in memory the splits (test only when
    ``train=False``; ``Data.train`` is then an empty split)."""
    from spiking.datasets import BinnedDataset
    from spiking.datasets import cache_dir as user_cache

    train_r, test_r, desc = _readers(cfg)
    cache = cfg.cache_dir if cfg.cache_dir is not None else user_cache() / "binned"
    audio = cfg.dataset in ("shd", "fsdd-shd")
    if audio:
        kw = {"time_window": AUDIO_SPAN_US / cfg.n_time_bins, "start_time": 0,
                  "end_time": AUDIO_SPAN_US}
        dt = AUDIO_SPAN_S / cfg.n_time_bins
    else:
        kw = {"n_time_bins": cfg.n_time_bins}
        dt = CAMERA_DURATION_S / cfg.n_time_bins
    splits = []
    for reader, n, tag in ((train_r, cfg.max_train_samples, "train"),
                           (test_r, cfg.max_test_samples, "test")):
        if tag == "train" and not train:
            n = 1
        binned = BinnedDataset(reader, cache_dir=cache, **kw)
        idx = balanced_subset(reader.targets, n)
        splits.append(_materialize(binned, idx, f"{cfg.dataset} {tag}", progress))
    train, test = splits
    if audio:  # fixed span: cut the possible extra incomplete bin
        train.x, test.x = train.x[:, :cfg.n_time_bins], test.x[:, :cfg.n_time_bins]
    val = None
    if train and cfg.val_fraction > 0:
        pick = torch.as_tensor(validation_indices(train.y.numpy(), cfg.val_fraction, cfg.seed))
        if len(pick) == 0:  # each class keeps >= 1 training sample, so only this can happen
            raise ValueError(f"val_fraction {cfg.val_fraction}: no class of the {len(train)} "
                             f"training samples has two samples to split; expected a larger "
                             f"training set")
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[pick] = False
        val, train = Split(train.x[pick], train.y[pick]), Split(train.x[rest], train.y[rest])
    classes = list(getattr(train_r, "classes", []))
    n_classes = max(len(classes), int(train.y.max()) + 1, int(test.y.max()) + 1)
    if audio:  # SHD files keep 20 keys; FSDD-format files only the 10 English ones
        classes = classes[:n_classes]
    return Data(train, test, tuple(train.x.shape[2:]), n_classes, classes, dt, desc, val)
