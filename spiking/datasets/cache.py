"""Binned datasets with an optional disk cache of the dense tensors.

Cache layout: ``<cache_dir>/<key>/<index>.npz`` where ``key`` hashes the dataset's identity, the
binning parameters (or the transform's repr, e.g. a tonic ``ToFrame``), the dtype and
:data:`CACHE_VERSION`; ``<cache_dir>/<key>/params.json`` records them in clear. Each entry stores
the frames, the label, the sample's fingerprint on disk (path, size, mtime) and a BLAKE2 digest of
the frames. Entries are written atomically (temporary file in the same folder, then
``os.replace``). On reading, an entry that fails to load, whose digest does not match, or whose
fingerprint differs from the current source file is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from spiking.datasets.binning import EventBinning

#: Bump when the entry format or the binning semantics change (invalidates old entries).
CACHE_VERSION = 1


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest()


def atomic_save_npz(path: Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` as .npz via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class BinnedDataset(torch.utils.data.Dataset):
    """Wrap an event dataset so that ``ds[i]`` is ``(frames [T, ...] float32, label)``.

    Either binning parameters (``n_time_bins`` or ``time_window`` plus ``overlap``,
    ``include_incomplete``, ``start_time``, ``end_time``; see :mod:`spiking.datasets.binning`) or a
    ``transform`` callable from events to frames (``tonic.transforms.ToFrame`` is accepted; its
    repr is part of the cache key). ``sensor_size`` defaults to ``dataset.sensor_size``.
    ``cache_dir=None`` bins on every access; a path (or ``True`` for
    ``spiking.datasets.cache_dir() / "binned"``) keeps the tensors on disk. Counters ``hits``,
    ``misses`` and ``rebuilt`` (corrupt or stale entries redone) are per process.
    """

    def __init__(self, dataset, n_time_bins=None, time_window=None, overlap=0.0,
                 include_incomplete=False, start_time=None, end_time=None, transform=None,
                 sensor_size=None, cache_dir=None, dtype=torch.float32):
        self.dataset, self.dtype = dataset, dtype
        if transform is not None:
            if n_time_bins is not None or time_window is not None:
                raise ValueError("give binning parameters or a transform, not both")
            self.transform = transform
            self._key = (transform.key() if isinstance(transform, EventBinning)
                         else {"transform": repr(transform)})
        else:
            size = sensor_size if sensor_size is not None else getattr(dataset, "sensor_size", None)
            if size is None:
                raise ValueError("sensor_size is needed: the dataset has no .sensor_size")
            self.transform = EventBinning(size, n_time_bins, time_window, overlap,
                                          include_incomplete, start_time, end_time)
            self._key = self.transform.key()
        self.hits = self.misses = self.rebuilt = 0
        self.cache_path = None
        if cache_dir is not None and cache_dir is not False:
            if cache_dir is True:
                from spiking.datasets.locate import cache_dir as user_cache

                cache_dir = user_cache() / "binned"
            token = (dataset.cache_token() if hasattr(dataset, "cache_token")
                     else f"{type(dataset).__module__}.{type(dataset).__qualname__}|{len(dataset)}")
            params = {"version": CACHE_VERSION, "dataset": token, "dtype": str(dtype),
                      **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self._key.items()}}
            blob = json.dumps(params, sort_keys=True, default=str)
            key = hashlib.sha256(blob.encode()).hexdigest()[:20]
            self.cache_path = Path(cache_dir) / key
            self.cache_path.mkdir(parents=True, exist_ok=True)
            meta = self.cache_path / "params.json"
            if not meta.exists():
                fd, tmp = tempfile.mkstemp(dir=self.cache_path, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(params, indent=1, sort_keys=True, default=str))
                os.replace(tmp, meta)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def sensor_size(self):
        return getattr(self.dataset, "sensor_size", None)

    def _fingerprint(self, index: int) -> str:
        fp = getattr(self.dataset, "sample_fingerprint", None)
        return fp(index) if fp is not None else f"index {index}"

    def _bin(self, index: int):
        events, label = self.dataset[index]
        frames = self.transform(events)
        frames = (frames if isinstance(frames, torch.Tensor) else torch.as_tensor(frames))
        return frames.to(self.dtype), int(label)

    def _entry(self, index: int) -> Path:
        return self.cache_path / f"{index}.npz"

    def _load(self, path: Path, fingerprint: str):
        """Frames and label from a valid entry, or None if absent, corrupt or stale."""
        if not path.exists():
            return None, False
        try:
            with np.load(path, allow_pickle=False) as z:
                frames, label = z["frames"], int(z["label"])
                ok = str(z["fingerprint"]) == fingerprint and str(z["digest"]) == _digest(frames)
        except Exception:  # noqa: BLE001 - any unreadable entry is rebuilt, never trusted
            return None, True
        return ((torch.from_numpy(frames), label), False) if ok else (None, True)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if self.cache_path is None:
            return self._bin(index)
        fingerprint = self._fingerprint(index)
        path = self._entry(index)
        hit, bad = self._load(path, fingerprint)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        self.rebuilt += int(bad)
        frames, label = self._bin(index)
        arr = frames.detach().cpu().numpy()
        atomic_save_npz(path, frames=arr, label=np.int64(label),
                        fingerprint=np.str_(fingerprint), digest=np.str_(_digest(arr)))
        return frames, label
