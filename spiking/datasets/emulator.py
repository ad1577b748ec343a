"""Event-camera emulator: static images -> N-MNIST-style recordings made by three saccades.

N-MNIST was recorded by moving an ATIS event camera on a pan-tilt unit in front of a monitor
showing each MNIST digit: three saccades of about 100 ms each along an isosceles triangle, the
28x28 digit seen through the 34x34 pixel window that the motion sweeps (Orchard et al. 2015,
"Converting static image datasets to spiking neuromorphic datasets using saccades", Front.
Neurosci. 9:437, Sec. 2 and Fig. 3; the recordings' timestamps end at about 306-311 ms, see
``../shared/data/nmnist-subset/SOURCE.md``). This module emulates that recording.

Model, as coded (vectorised over images and pixels; one loop over time steps):

* scene: the image (values in [0, 1], bright strokes on a dark background, like the monitor)
  translated by the saccade offset ``(dx(t), dy(t))``; a sensor pixel sees the bilinearly
  sampled scene intensity ``I``; the log intensity is ``L = log(I + eps)``.
* saccades: straight segments between the triangle's vertices ``(0,0) -> (A/2, A) -> (A, 0) ->
  (0,0)`` with ``A = 6`` px (so the 28 px digit stays inside the 34 px sensor), each lasting
  ``saccade_s``; along a segment the position follows the raised-cosine profile
  ``s(u) = (1 - cos(pi u)) / 2`` (motor accelerates, then brakes; event rate peaks mid-saccade
  as in the recordings).
* pixel (ideal DVS/ATIS change detector, Lichtsteiner et al. 2008, IEEE JSSC 43(2):566): each
  pixel keeps a reference level ``R`` (initialised to ``L(0)``). Within a time step ``L`` is
  linear in time. While ``|L - R| >= C`` and the pixel is not refractory, it emits one event of
  polarity ``p = 1`` (ON) if ``L > R`` else ``p = 0`` (OFF) at the time the threshold
  ``R + sign * C`` is crossed (but not before the pixel is ready again), then ``R += sign * C``
  and the pixel is blind for ``refractory_s``. Crossings that fall inside the refractory period
  are delayed to its end, not lost (the reference still has to travel past them).
* noise (optional): background-activity events, Poisson with ``noise_hz`` per pixel, random
  polarity, uniform times; drawn from ``numpy.random.default_rng([seed, index])`` per image, so
  an image's recording does not depend on which other images share its batch.

Times are integer microseconds. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Event dtype shared with :mod:`spiking.datasets.nmnist` (tonic's N-MNIST dtype).
EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
#: N-MNIST format: 23-bit timestamps; overflow marker y == 240 adds 2**13 us to later events
#: (Orchard's reference reader ``Read_Ndataset.m``, mirrored by ``tonic.io.read_mnist_file``).
T_BITS = 23
OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13


@dataclass(frozen=True)
class EmulatorConfig:
    """Camera and motion parameters (defaults tuned to look like N-MNIST; sources inline)."""

    sensor_size: tuple = (34, 34)   # N-MNIST recordings are 34x34 (Orchard et al. 2015)
    image_size: int = 28            # MNIST digit size in pixels (Orchard et al. 2015)
    amplitude_px: float = 6.0       # = 34 - 28: the sweep that keeps the digit on the sensor
    saccade_s: float = 0.1          # ~100 ms per saccade (Orchard et al. 2015, Sec. 2.3)
    n_saccades: int = 3             # three saccades (Orchard et al. 2015)
    threshold: float = 0.4          # log-intensity contrast threshold C; DVS thresholds are
    #                                 ~0.1-0.5 (Lichtsteiner et al. 2008); 0.4 gives a median
    #                                 4.3k events on the UCI digits (N-MNIST: 4.2k, SOURCE.md)
    refractory_s: float = 1e-3      # pixel dead time; N-MNIST same-pixel intervals: 1st pct ~1.8 ms
    eps: float = 0.1                # dark level added before the log (monitor black is not 0)
    noise_hz: float = 0.0           # background activity per pixel (off by default)
    dt_s: float = 1e-3              # simulation step (motion is linear within a step)

    def __post_init__(self):
        if self.threshold <= 0 or self.refractory_s < 0 or self.eps <= 0 or self.dt_s <= 0:
            raise ValueError(f"EmulatorConfig needs threshold>0, refractory_s>=0, eps>0, dt_s>0; "
                             f"got {self}")
        if self.image_size + self.amplitude_px > max(self.sensor_size) + 1e-9:
            raise ValueError(f"image_size {self.image_size} + amplitude {self.amplitude_px} "
                             f"exceeds the sensor {self.sensor_size}")

    @property
    def duration_s(self) -> float:
        return self.n_saccades * self.saccade_s


def saccade_offsets(t_s, cfg: EmulatorConfig = EmulatorConfig()):
    """Scene offset ``(dx, dy)`` in pixels at times ``t_s`` (seconds), see the module doc."""
    a = cfg.amplitude_px
    verts = np.array([[0.0, 0.0], [a / 2, a], [a, 0.0], [0.0, 0.0]])
    t = np.clip(np.asarray(t_s, dtype=np.float64), 0.0, cfg.duration_s)
    seg = np.minimum((t / cfg.saccade_s).astype(np.int64), cfg.n_saccades - 1)
    u = t / cfg.saccade_s - seg
    s = (1.0 - np.cos(np.pi * u)) / 2.0
    v0, v1 = verts[seg % 3], verts[seg % 3 + 1]
    pos = v0 + (v1 - v0) * s[..., None]
    return pos[..., 0], pos[..., 1]


def resize_bilinear(images, size: int) -> np.ndarray:
    """Resize ``[B, H, W]`` images to ``[B, size, size]`` (bilinear, align-corners=False)."""
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim != 3:
        raise ValueError(f"images must be [B, H, W], got shape {imgs.shape}")

    def matrix(n_in):
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = src - i0
        m = np.zeros((size, n_in))
        m[np.arange(size), i0] += 1 - w
        m[np.arange(size), i1] += w
        return m

    return np.einsum("yh,bhw,xw->byx", matrix(imgs.shape[1]), imgs, matrix(imgs.shape[2]))


def _scene_sampler(images, cfg: EmulatorConfig):
    """Return ``f(dx, dy) -> log intensity [B, H, W]`` (float32) seen for one scene offset."""
    b, n, _ = images.shape
    sh, sw = cfg.sensor_size
    pad = math.ceil(cfg.amplitude_px) + 2
    canvas = np.zeros((b, sh + 2 * pad, sw + 2 * pad), np.float32)
    # at offset (0, 0) the digit's top-left corner is the sensor's top-left corner; the
    # triangle's offsets lie in [0, A] x [0, A], so the digit never leaves the sensor.
    canvas[:, pad:pad + n, pad:pad + n] = images
    eps = np.float32(cfg.eps)

    def sample(dx, dy):
        # sensor pixel (y, x) sees scene point (y - dy, x - dx): integer part by slicing,
        # fractional part by bilinear weights (first along x, then along y).
        ix, iy = math.floor(dx), math.floor(dy)
        fx, fy = np.float32(dx - ix), np.float32(dy - iy)
        y0, x0 = pad - iy, pad - ix
        win = canvas[:, y0 - 1:y0 + sh, x0 - 1:x0 + sw]
        hx = win[:, :, 1:] * (1 - fx) + win[:, :, :-1] * fx
        inten = hx[:, 1:] * (1 - fy) + hx[:, :-1] * fy
        return np.log(inten + eps)

    return sample


_CHUNK = 64


def emulate(images, cfg: EmulatorConfig = EmulatorConfig(), seed: int = 0,
            indices=None, offsets=None) -> list:
    """Record ``images`` ``[B, image_size, image_size]`` (values in [0, 1]) with the camera.

    ``indices`` (default ``range(B)``) name each image for its noise stream. ``offsets`` is an
    optional function ``t_s -> (dx, dy)`` replacing the saccades (tests use it for static
    scenes and moving bars). Returns a list of ``B`` structured arrays (``EVENT_DTYPE``, sorted
    by time, then y, then x).
    """
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim != 3 or imgs.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"images must be [B, {cfg.image_size}, {cfg.image_size}], "
                         f"got shape {imgs.shape}")
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise ValueError(f"image values must lie in [0, 1], got [{imgs.min()}, {imgs.max()}]")
    b = imgs.shape[0]
    idx = np.arange(b) if indices is None else np.asarray(indices)
    if b > _CHUNK:  # small batches keep the per-step arrays in cache (2-3x faster)
        return [r for i in range(0, b, _CHUNK)
                for r in emulate(imgs[i:i + _CHUNK], cfg, seed, idx[i:i + _CHUNK], offsets)]
    motion = offsets or (lambda t: saccade_offsets(t, cfg))
    sample = _scene_sampler(imgs, cfg)
    sh, sw = cfg.sensor_size
    dt_us = cfg.dt_s * 1e6
    refr_us = round(cfg.refractory_s * 1e6)
    n_steps = round(cfg.duration_s / cfg.dt_s)
    level = sample(*(float(v) for v in motion(0.0))).reshape(-1)
    base = level.copy()
    count = np.zeros(level.shape, np.int64)   # reference = base + C * count (no drift)
    ref = base.copy()
    ready = np.zeros(level.shape)             # time (us) from which each pixel may fire again
    c = np.float32(cfg.threshold)
    thr = np.float32(cfg.threshold + 1e-5)    # strictly past the threshold (no round-off events)
    chunks = []
    for k in range(1, n_steps + 1):
        t0, t1 = (k - 1) * dt_us, k * dt_us
        new = sample(*(float(v) for v in motion(k * cfg.dt_s))).reshape(-1)
        cand = np.flatnonzero(np.abs(new - ref) > thr)
        while cand.size:
            diff = new[cand] - ref[cand]
            ok = (np.abs(diff) > thr) & (ready[cand] <= t1)
            cand, diff = cand[ok], diff[ok]
            if not cand.size:
                break
            sign = np.where(diff > 0, 1, -1)
            count[cand] += sign
            target = base[cand] + c * count[cand]
            lv = level[cand]
            sl = (new[cand] - lv) / dt_us
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = t0 + (target - lv) / sl
            tc = np.where(np.isfinite(tc), tc, t0)
            te = np.maximum(np.ceil(np.clip(tc, t0, t1)), ready[cand])
            ref[cand] = target
            ready[cand] = te + refr_us
            chunks.append(np.stack([cand, te.astype(np.int64), (sign > 0).astype(np.int64)], 1))
        level = new
    ev = np.concatenate(chunks) if chunks else np.zeros((0, 3), np.int64)
    flat = ev[:, 0]
    ev = np.stack([flat // (sh * sw), flat % sw, (flat // sw) % sh, ev[:, 1], ev[:, 2]], 1)
    out = []
    order = np.lexsort((ev[:, 1], ev[:, 2], ev[:, 3], ev[:, 0]))
    ev = ev[order]
    bounds = np.searchsorted(ev[:, 0], np.arange(b + 1))
    dur_us = n_steps * dt_us
    for i in range(b):
        e = ev[bounds[i]:bounds[i + 1]]
        if cfg.noise_hz > 0:
            e = _add_noise(e, int(idx[i]), seed, cfg, dur_us)
        rec = np.empty(len(e), EVENT_DTYPE)
        rec["x"], rec["y"], rec["t"], rec["p"] = e[:, 1], e[:, 2], e[:, 3], e[:, 4]
        out.append(rec)
    return out


def _add_noise(e, index, seed, cfg, dur_us):
    rng = np.random.default_rng([seed, index])
    sh, sw = cfg.sensor_size
    n = rng.poisson(cfg.noise_hz * cfg.duration_s * sh * sw)
    noise = np.stack([np.full(n, 0), rng.integers(0, sw, n), rng.integers(0, sh, n),
                      rng.integers(0, int(dur_us), n), rng.integers(0, 2, n)], 1)
    allev = np.concatenate([e, noise])
    return allev[np.lexsort((allev[:, 1], allev[:, 2], allev[:, 3]))]


def encode_nmnist(events) -> bytes:
    """Encode events (fields x, y, t, p; t >= 0 in microseconds, non-decreasing) as N-MNIST bytes.

    Timestamps past 23 bits are written with overflow markers (``y = 240``, all else 0) so
    that the reference reader's ``t += 2**13`` per marker restores them exactly.
    """
    ev = np.asarray(events)
    x, y, t, p = (np.asarray(ev[f], dtype=np.int64) for f in ("x", "y", "t", "p"))
    if x.size and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255
                   or (y == OVERFLOW_Y).any()):
        raise ValueError("x, y must lie in 0..255 and y must not be 240 (the overflow marker)")
    if t.size and (t.min() < 0 or np.any(np.diff(t) < 0)):
        raise ValueError("timestamps must be non-negative and non-decreasing")
    if p.size and not np.isin(p, (0, 1)).all():
        raise ValueError("polarity must be 0 or 1")
    # markers needed before each event so that t - 2**13 * markers fits in 23 bits
    need = np.maximum(0, -(-(t - (2**T_BITS - 1)) // OVERFLOW_INCREMENT_US))
    n_mark = np.diff(need, prepend=0)
    pos = np.arange(t.size) + need           # row of each event once markers are inserted
    rows = np.zeros((t.size + (int(need[-1]) if t.size else 0), 5), np.uint8)
    rows[:, 1] = OVERFLOW_Y
    ts = t - OVERFLOW_INCREMENT_US * need
    rows[pos, 0], rows[pos, 1] = x, y
    rows[pos, 2] = (p << 7) | (ts >> 16)
    rows[pos, 3], rows[pos, 4] = (ts >> 8) & 255, ts & 255
    assert int(n_mark.sum()) == rows.shape[0] - t.size
    return rows.tobytes()


def write_nmnist(path, events) -> None:
    """Write events to ``path`` in the N-MNIST ``.bin`` format (atomic: temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(encode_nmnist(events))
    os.replace(tmp, path)


def load_image_folder(folder, cfg: EmulatorConfig = EmulatorConfig()):
    """Images under ``folder/<label>/*.{png,jpg,...}`` -> (images [B,S,S] in [0,1], labels, names).

    Images are converted to grey, resized to ``cfg.image_size`` and inverted when their border
    is brighter than their centre (dark-on-light scans become light-on-dark like MNIST).
    Needs Pillow (imported lazily).
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("emulating an image folder needs Pillow: pip install pillow") from e
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}
    imgs, labels, names = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(q for q in sub.iterdir() if q.suffix.lower() in exts):
            a = np.asarray(Image.open(f).convert("L"), dtype=np.float64) / 255.0
            a = resize_bilinear(a[None], cfg.image_size)[0]
            border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean()
            if border > a.mean():
                a = 1.0 - a
            imgs.append(np.clip(a, 0, 1))
            labels.append(sub.name)
            names.append(f.stem)
    if not imgs:
        raise FileNotFoundError(f"no images found under {folder}/<label>/ (extensions {sorted(exts)})")
    return np.stack(imgs), labels, names
