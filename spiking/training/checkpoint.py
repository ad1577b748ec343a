"""Checkpoints: atomic writes, everything needed to resume bit-exactly, safe loading.

A checkpoint is one ``torch.save`` dict holding only tensors, numbers, strings, lists and dicts
(so ``torch.load(weights_only=True)`` reads it without unpickling code):

``format`` (int), ``config`` (dict), ``versions`` (spiking/torch/numpy/python), ``epoch`` (the
number of completed epochs), ``model``, ``optimizer``, ``scheduler`` (state dicts), ``scaler``
(AMP grad scaler or None), ``rng`` (torch CPU / CUDA, numpy and python RNG states as tensors),
``sampler`` (``{"seed", "epoch"}``: the shuffling order is a pure function of these, as in
``DistributedSampler``), ``metrics`` (the history so far) and ``best`` (best test accuracy).

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over
the target with ``os.replace`` (atomic on POSIX and Windows): a run killed mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import platform
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
FILENAME = "checkpoint.pt"


def versions() -> dict:
    from spiking import __version__

    return {"spiking": str(__version__), "torch": str(torch.__version__),
            "numpy": str(np.__version__), "python": platform.python_version()}


def rng_state() -> dict:
    """All RNG states as tensors/ints/lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def atomic_save(obj, path) -> Path:
    """``torch.save`` to `path` through a temp file + fsync + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write `text` to `path` through a temp file + ``os.replace`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(path, *, config: dict, epoch: int, model, optimizer=None, scheduler=None,
         scaler=None, metrics=None, best: float | None = None, data: dict | None = None
         ) -> Path:
    """Save a training checkpoint atomically. `data` describes the dataset the model was built
    for (``input_shape``, ``n_classes``, ``dt``) so tools can rebuild it without the data."""
    state = {
        "data": dict(data or {}),
        "format": FORMAT,
        "config": config,
        "versions": versions(),
        "epoch": int(epoch),
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state(),
        "sampler": {"seed": int(config.get("seed", 0)), "epoch": int(epoch)},
        "metrics": list(metrics or []),
        "best": best,
    }
    return atomic_save(state, path)


def resolve(path) -> Path:
    """A checkpoint file, or a run folder holding ``checkpoint.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist (give a checkpoint file or a "
                                f"run folder holding {FILENAME})")
    return p


def load(path, map_location="cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check its format."""
    p = resolve(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"checkpoint {p} is not a spiking training checkpoint of format "
                         f"{FORMAT} (got format {got!r})")
    return state


def _unwrap(model):
    return model.module if hasattr(model, "module") else model
