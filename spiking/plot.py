"""Plots: spike rasters and membrane traces (matplotlib, headless-safe).

Functions draw with the object-oriented API on a ``matplotlib.figure.Figure`` (no pyplot, no
display needed) and return the figure; :func:`save` writes it atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x)


def _figure(ax, figsize):
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def raster(spikes, *, dt: float | None = None, sample: int = 0, ax=None, title: str = "",
           max_neurons: int | None = None, color="k"):
    """Raster of spikes ``[T, N]`` or ``[T, B, N...]`` (``sample`` picks the batch entry).

    Trailing neuron dims are flattened. Time axis in steps, or seconds when ``dt`` is given.
    """
    s = _np(spikes)
    if s.ndim < 2:
        raise ValueError(f"raster expects spikes [T, N] or [T, B, ...], got shape {s.shape}")
    if s.ndim > 2:
        if not 0 <= sample < s.shape[1]:
            raise ValueError(f"sample={sample} out of range for batch size {s.shape[1]}")
        s = s[:, sample].reshape(s.shape[0], -1)
    if max_neurons is not None:
        s = s[:, :max_neurons]
    t_idx, n_idx = np.nonzero(s)
    t = t_idx * dt if dt else t_idx
    fig, ax = _figure(ax, (7, 3.5))
    ax.scatter(t, n_idx, s=2, c=color, marker="|", linewidths=0.8)
    ax.set_xlim(0, (s.shape[0] * dt) if dt else s.shape[0])
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time (s)" if dt else "time step")
    ax.set_ylabel("neuron")
    rate = s.mean() / (dt if dt else 1.0)
    ax.set_title(title or f"{int(s.sum())} spikes, mean rate {rate:.3g}"
                 f"{' Hz' if dt else ' per step'}")
    return fig


def traces(v, *, spikes=None, threshold: float | None = None, dt: float | None = None,
           sample: int = 0, neurons=None, ax=None, title: str = "membrane potential"):
    """Membrane traces ``[T, N]`` or ``[T, B, N...]``; optional spike marks and threshold."""
    x = _np(v)
    if x.ndim < 2:
        raise ValueError(f"traces expects v [T, N] or [T, B, ...], got shape {x.shape}")
    if x.ndim > 2:
        x = x[:, sample].reshape(x.shape[0], -1)
    idx = list(range(min(5, x.shape[1]))) if neurons is None else list(neurons)
    bad = [i for i in idx if not 0 <= i < x.shape[1]]
    if bad:
        raise ValueError(f"neurons {bad} out of range for {x.shape[1]} neurons")
    t = np.arange(x.shape[0]) * (dt if dt else 1.0)
    fig, ax = _figure(ax, (7, 3.5))
    s = None
    if spikes is not None:
        s = _np(spikes)
        s = s[:, sample].reshape(s.shape[0], -1) if s.ndim > 2 else s
    top = float(np.nanmax(x[:, idx])) if x.size else 0.0
    span = (top - float(np.nanmin(x[:, idx]))) if x.size else 0.0
    step = 0.06 * (span if span > 0 else max(abs(top), 1.0))
    for k, i in enumerate(idx):
        line, = ax.plot(t, x[:, i], lw=1, label=f"neuron {i}")
        if s is not None:  # one row of spike marks per neuron, above all traces
            ts = t[s[:, i] > 0]
            ax.plot(ts, np.full(ts.shape, top + (k + 1) * step), "|",
                    color=line.get_color(), ms=8)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=0.8, label="threshold")
    ax.set_xlabel("time (s)" if dt else "time step")
    ax.set_ylabel("v")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def save(fig, path, dpi: int = 120) -> Path:
    """Write `fig` to `path` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
