"""Events to dense, time-first count tensors, batched and vectorised (CPU or GPU).

The slicing reproduces ``tonic.transforms.ToFrame`` (tonic 1.7.0, ``tonic/slicers.py``) exactly,
so results are equal to tonic's frames on the same events. With ``t`` sorted ascending,
``t0 = t[0]``, ``t_end = t[-1]``:

* ``n_time_bins=N, overlap=o`` (0 <= o < 1): ``window = floor((t_end - t0) / N) * (1 + o)``,
  ``stride = window * (1 - o)``; bin ``i`` holds events with
  ``t0 + i*stride <= t < t0 + i*stride + window``. The floor drops the remainder, and the half-open
  window drops events at exactly ``t_end``, as tonic does.
* ``time_window=w, overlap=o`` (o in time units, ``stride = w - o > 0``): ``start = start_time or
  t0``, ``end = end_time or t_end``, ``n = floor((end - start - w) / stride) + 1`` bins (``ceil``
  with ``include_incomplete=True``), at least 1; bin ``i`` is ``[start + i*stride, ... + w)``.

With overlap an event is counted in every window it falls in. A sensor with one polarity counts
every event as polarity 0 (and rejects events of two polarities, as tonic does). An empty
recording gives all-zero bins: ``N`` of them, or 1 for ``time_window``.

Shapes: events with ``y`` give ``[T, P, H, W]`` (``sensor_size = (W, H, P)``, tonic's order); audio
events (``t, x, p``; ``sensor_size = (C, 1, P)``) give ``[T, C]`` for one polarity, else
``[T, P, C]``. The batched form puts the batch second: ``[T, B, ...]`` with per-sample lengths.
(Differences from tonic: float32 output instead of int16, and one shape rule for empty input.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

_FIELDS = ("t", "x", "y", "p")


def _check_params(n_time_bins, time_window, overlap, start_time, end_time):
    if (n_time_bins is None) == (time_window is None):
        raise ValueError("give exactly one of n_time_bins or time_window "
                         f"(got n_time_bins={n_time_bins!r}, time_window={time_window!r})")
    if n_time_bins is not None:
        if int(n_time_bins) != n_time_bins or n_time_bins < 1:
            raise ValueError(f"n_time_bins must be a positive integer, got {n_time_bins!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap for n_time_bins is a fraction in [0, 1), got {overlap!r}")
        if start_time is not None or end_time is not None:
            raise ValueError("start_time/end_time apply to time_window only (as in tonic)")
    else:
        if not time_window > 0:
            raise ValueError(f"time_window must be > 0 (µs), got {time_window!r}")
        if not time_window - overlap > 0:
            raise ValueError(f"overlap {overlap!r} must be smaller than time_window {time_window!r}")


def _as_tensors(events, device):
    """Structured array / mapping of fields -> dict of tensors on ``device`` (t float64)."""
    names = events.dtype.names if isinstance(events, np.ndarray) else tuple(events.keys())
    if names is None or not {"t", "x", "p"} <= set(names):
        raise ValueError(f"events need fields t, x, p (and y for cameras), got {names}")
    out = {}
    for k in _FIELDS:
        if k in names:
            v = events[k]
            v = torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            out[k] = v.to(device=device, dtype=torch.float64 if k == "t" else torch.int64)
            if out[k].ndim != 1:
                raise ValueError(f"event field {k!r} must be 1-D, got shape {tuple(out[k].shape)}")
    return out


def _integer_times(events) -> bool:
    t = events["t"]
    return not (t.dtype.kind == "f" if isinstance(t, np.ndarray) else t.is_floating_point())


def _pad(fields, key, length, value):
    rows = [f[key] for f in fields]
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype, device=rows[0].device)
    for b, r in enumerate(rows):
        out[b, : r.numel()] = r
    return out


def bin_events_batch(events_list, sensor_size, n_time_bins=None, time_window=None,
                     overlap=0.0, include_incomplete=False, start_time=None, end_time=None,
                     dtype=torch.float32, device=None):
    """Bin a batch of recordings at once: returns ``(x [T, B, ...], lengths [B])``.

    ``events_list`` holds structured arrays or mappings of 1-D tensors (``t, x, [y,] p``); with
    tensors already on a GPU the whole computation runs there. ``lengths[b]`` is sample ``b``'s
    bin count (all ``n_time_bins``, or per sample for ``time_window``; bins past it are zero).
    """
    _check_params(n_time_bins, time_window, overlap, start_time, end_time)
    if len(sensor_size) != 3:
        raise ValueError(f"sensor_size must be (W, H, P) as in tonic, got {sensor_size!r}")
    W, H, P = (int(s) for s in sensor_size)
    if device is None:
        first = events_list[0] if len(events_list) else None
        device = first["t"].device if first is not None and not isinstance(
            first, np.ndarray) and isinstance(first["t"], torch.Tensor) else "cpu"
    fields = [_as_tensors(ev, device) for ev in events_list]
    integer_times = all(_integer_times(ev) for ev in events_list)
    B = len(fields)
    if B == 0:
        raise ValueError("events_list is empty")
    has_y = "y" in fields[0]
    if any(("y" in f) != has_y for f in fields):
        raise ValueError("all recordings in a batch must have the same fields")
    n_ev = torch.tensor([f["t"].numel() for f in fields], device=device)
    L = max(int(n_ev.max()), 1)
    t = _pad(fields, "t", L, float("inf"))
    x, p = _pad(fields, "x", L, 0), _pad(fields, "p", L, 0)
    y = _pad(fields, "y", L, 0) if has_y else torch.zeros_like(x)
    valid = torch.arange(L, device=device)[None, :] < n_ev[:, None]
    _validate(t, x, y, p, valid, W, H if has_y else 1, P, has_y)
    if P == 1:
        p = torch.zeros_like(p)

    nonempty = n_ev > 0
    idx_last = (n_ev - 1).clamp(min=0)
    t0 = torch.where(nonempty, t[:, 0], torch.zeros_like(t[:, 0]))
    t_end = torch.where(nonempty, t.gather(1, idx_last[:, None])[:, 0], torch.zeros_like(t0))
    if n_time_bins is not None:
        n_bins = torch.full((B,), int(n_time_bins), device=device)
        window = torch.div(t_end - t0, int(n_time_bins), rounding_mode="floor") * (1 + overlap)
        stride = window * (1 - overlap)
        start = t0
    else:
        start = t0 if start_time is None else torch.full_like(t0, float(start_time))
        end = t_end if end_time is None else torch.full_like(t0, float(end_time))
        stride = torch.full_like(t0, float(time_window - overlap))
        window = torch.full_like(t0, float(time_window))
        q = (end - start - window) / stride
        q = torch.ceil(q) if include_incomplete else torch.floor(q)
        n_bins = (q + 1).clamp(min=1).to(torch.int64)
        n_bins = torch.where(nonempty, n_bins, torch.ones_like(n_bins))
    T = int(n_bins.max())
    i = torch.arange(T, device=device, dtype=torch.float64)
    w_start = i[None, :] * stride[:, None] + start[:, None]          # [B, T]
    w_end = w_start + window[:, None]
    # Per event, the last window starting at or before it (j), then the windows j, j-1, ...
    # that can still hold it: ceil(window / stride) of them (one more when edges are not whole
    # numbers, for float rounding). Each candidate is tested with tonic's own comparison,
    # start <= t < end, so the counts equal tonic's searchsorted slices. Bins past a sample's
    # count get end = -inf, padding has t = +inf, so neither passes; rejects go to a discard slot.
    in_range = (torch.arange(T, device=device)[None, :] < n_bins[:, None]) & nonempty[:, None]
    w_end = torch.where(in_range, w_end, float("-inf"))
    j = torch.searchsorted(w_start.contiguous(), t.contiguous(), right=True) - 1   # [B, L]
    pos_stride = stride > 0
    ratio = torch.where(pos_stride, window / torch.where(pos_stride, stride, 1.0), 0.0)
    whole = integer_times and bool((torch.frac(torch.stack([window, stride, start])) == 0).all())
    m = max(int(torch.ceil(ratio.max()).item()) + (0 if whole else 1), 1)
    PHW = P * H * W
    base = torch.arange(B, device=device)[:, None] * PHW + (p * H + y) * W + x     # [B, L]
    n_out = T * B * PHW
    out = torch.zeros(n_out + 1, dtype=dtype, device=device)
    ones = torch.ones(B * L, dtype=dtype, device=device)
    for k in range(m):
        safe = (j - k).clamp(min=0)
        ok = (t >= w_start.gather(1, safe)) & (t < w_end.gather(1, safe))
        if k:
            ok &= j >= k
        flat = (safe * (B * PHW) + base).masked_fill_(~ok, n_out)
        out.index_add_(0, flat.reshape(-1), ones)
    out = out[:n_out]
    out = out.view(T, B, P, H, W)
    if not has_y:
        out = out.view(T, B, P, W)
        if P == 1:
            out = out.view(T, B, W)
    return out, n_bins


def _validate(t, x, y, p, valid, W, H, P, has_y):
    """Boundary checks without boolean compaction (padding: t = +inf, x = y = p = 0)."""
    if torch.isnan(t).any() or (torch.isinf(t) & valid).any():
        raise ValueError("event times must be finite")
    if (t[:, 1:] < t[:, :-1]).any():   # +inf padding never decreases
        raise ValueError("event times must be sorted ascending within each recording")
    for name, v, hi in (("x", x, W), ("y", y, H), ("p", p, P)):
        if (name == "y" and not has_y) or (name == "p" and P == 1):
            continue
        lo_v, hi_v = int(v.min()), int(v.max())
        if lo_v < 0 or hi_v >= hi:
            raise ValueError(f"event {name} must lie in 0..{hi - 1} for sensor_size, "
                             f"got range {lo_v}..{hi_v}")
    if P == 1 and ((p != p[:, :1]) & valid).any():
        raise ValueError("single polarity sensor, but events contain two polarities")


def bin_events(events, sensor_size, n_time_bins=None, time_window=None, overlap=0.0,
               include_incomplete=False, start_time=None, end_time=None,
               dtype=torch.float32, device=None) -> torch.Tensor:
    """Bin one recording: ``[T, P, H, W]`` (camera) or ``[T, C]`` (audio, one polarity).

    Parameters mirror ``tonic.transforms.ToFrame`` (``sensor_size = (W, H, P)``, times in the
    events' unit, µs for the readers here); see the module docstring for the exact bin edges.
    """
    out, _ = bin_events_batch([events], sensor_size, n_time_bins=n_time_bins,
                              time_window=time_window, overlap=overlap,
                              include_incomplete=include_incomplete, start_time=start_time,
                              end_time=end_time, dtype=dtype, device=device)
    return out[:, 0]


@dataclass(frozen=True)
class EventBinning:
    """A ``ToFrame``-like callable holding the binning parameters (also the cache key)."""

    sensor_size: tuple
    n_time_bins: int | None = None
    time_window: float | None = None
    overlap: float = 0.0
    include_incomplete: bool = False
    start_time: float | None = None
    end_time: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "sensor_size", tuple(int(s) for s in self.sensor_size))
        _check_params(self.n_time_bins, self.time_window, self.overlap, self.start_time,
                      self.end_time)

    def __call__(self, events) -> torch.Tensor:
        return bin_events(events, **asdict(self))

    def batch(self, events_list, device=None):
        return bin_events_batch(events_list, **asdict(self), device=device)

    def key(self) -> dict:
        return {"binning": "EventBinning", **asdict(self)}
