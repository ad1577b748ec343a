"""Training plots written to the run folder: curves, confusion matrix, spike raster, learnt
delays.

Drawn on ``matplotlib.figure.Figure`` objects (no pyplot, headless-safe) and written
atomically with :func:`spiking.plot.save`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(figsize, ncols=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols)


def curves(history: list[dict], path) -> Path:
    """Loss, accuracy and spikes per sample over epochs (train, validation when held out,
    and test)."""
    from spiking.plot import save

    fig, axes = _figure((12, 3.5), 3)
    ep = [h["epoch"] for h in history]
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy"),
                           (axes[2], "spikes_per_sample", "spikes per sample")):
        for split, style in (("train", "-o"), ("val", ":^"), ("test", "--s")):
            ys = [h.get(f"{split}_{key}") for h in history]
            pts = [(e, y) for e, y in zip(ep, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
        else:  # e.g. spikes per sample of a non-spiking model
            ax.text(0.5, 0.5, "not recorded for this model", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    return save(fig, path)


def confusion(cm, classes, path, title: str = "test confusion matrix") -> Path:
    """Confusion matrix ``cm[true, predicted]`` with counts written in the cells."""
    from spiking.plot import save

    cm = np.asarray(cm)
    n = cm.shape[0]
    fig, ax = _figure((1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(cm, cmap="Blues")
    labels = [str(c) for c in classes] if classes and len(classes) == n else \
        [str(i) for i in range(n)]
    ax.set_xticks(range(n), labels, rotation=90, fontsize="small")
    ax.set_yticks(range(n), labels, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} (accuracy {acc:.1%})")
    return save(fig, path)


def raster(activity: dict, path, *, dt: float | None = None, sample: int = 0,
           label=None, predicted=None, max_neurons: int = 2000) -> Path:
    """Spike raster of one test sample, one panel per recorded layer."""
    from spiking.plot import raster as draw
    from spiking.plot import save

    names = list(activity)
    fig, axes = _figure((8, 2.3 * len(names)), 1)
    if len(names) == 1:
        axes = [axes]
    else:
        fig.clear()
        axes = fig.subplots(len(names), 1)
    for ax, name in zip(axes, names):
        s = activity[name]
        draw(s, dt=dt, sample=sample, ax=ax, max_neurons=max_neurons)
        ax.set_title(f"{name}: {ax.get_title()}", fontsize="small")
    if label is not None:
        fig.suptitle(f"test sample {sample}: label {label}, predicted {predicted}")
    return save(fig, path)


def learnt_delays(model, path, *, dt: float | None) -> Path | None:
    """Histogram of the learnt synaptic delays (ms) of every
    :class:`~spiking.models.delays.LearntDelays` projection of ``model``, one panel per
    projection, weighted by synapse count and, dashed, by ``|weight|`` (in steps when ``dt`` is
    None); None (nothing written) for a model without learnt delays."""
    from spiking.models.delays import LearntDelays
    from spiking.plot import save

    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, LearntDelays)]
    if not mods:
        return None
    scale, unit = (1.0, "steps") if dt is None else (dt * 1e3, "ms")
    fig, axes = _figure((4.2 * len(mods), 3.2), len(mods))
    for ax, (name, m) in zip(np.atleast_1d(axes), mods):
        lag = m.delays().cpu().numpy().ravel()
        w = m.syn_weight.detach().abs().cpu().double().numpy().ravel()
        grid = np.arange(m.kernel_size[0]) * m.dilation[0]
        edges = np.r_[grid - m.dilation[0] / 2, grid[-1] + m.dilation[0] / 2] * scale
        ax.hist(lag * scale, bins=edges, color="tab:blue", alpha=0.7, label="synapses")
        ax.hist(lag * scale, bins=edges, weights=w * lag.size / max(w.sum(), 1e-300),
                histtype="step", ls="--", color="k", label="|weight|-weighted")
        hard = "hard" if m.hard else f"sigma {float(m.sigma):.2f} taps"
        ax.set_title(f"{name}: mean {lag.mean() * scale:.0f} {unit} ({hard})", fontsize="small")
        ax.set_xlabel(f"delay ({unit})")
        ax.set_ylabel("synapses")
        ax.legend(fontsize="x-small")
    return save(fig, path)
