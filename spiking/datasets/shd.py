"""Spiking Heidelberg Digits (SHD) reader for the HDF5 layout of Cramer et al. (2020).

Layout read (the SHD files as distributed)::

    /spikes/times   (N,) variable-length float16   spike times, seconds
    /spikes/units   (N,) variable-length uint16    cochlea channel 0..699
    /labels         (N,) uint                      class 0..19
    /extra/speaker  (N,) uint                      speaker id (optional here)
    /extra/keys     (20,) bytes                    class names (optional here)

Events come back as tonic's structured array ``t, x, p`` (int64): ``t`` in µs, ``x`` the channel,
``p = 1``. The float16 trap: float16 tops out at 65504, so ``times * 1e6`` computed in float16 is
``inf``. Times are therefore cast to float64 *before* scaling, then truncated to int64 µs (the
same arithmetic as tonic 1.7.0 ``tonic/datasets/hsd.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from spiking.datasets.locate import (
    CorruptFileError,
    Skipped,
    check_on_error,
    missing_error,
    report_skipped,
    resolve_root,
)

#: tonic's SHD dtype (``tonic.datasets.hsd.HSD.dtype``).
SHD_DTYPE = np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)])
REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading SHD files needs h5py: pip install h5py") from e
    return h5py


def to_events(times, units) -> np.ndarray:
    """SHD spike times (s, any float dtype) and channels to a ``t, x, p`` structured array."""
    out = np.empty(len(times), dtype=SHD_DTYPE)
    out["t"] = np.asarray(times).astype(np.float64) * 1e6  # cast first: float16 * 1e6 = inf
    out["x"] = units
    out["p"] = 1
    return out


class SHD(torch.utils.data.Dataset):
    """Spiking Heidelberg Digits (Cramer et al. 2020): spoken digits 0-9 in English and German.

    ``dataset[i]`` is ``(events, label)``; events as in the module docstring. The file is
    ``<root>/SHD/shd_<split>.h5`` (or ``<root>/shd_<split>.h5``), or any SHD-layout file passed as
    ``file=``. A truncated file, missing keys or an out-of-range label raise
    :class:`CorruptFileError` naming the file; ``on_error="skip"`` leaves out samples with a bad
    label or mismatched lengths instead (listed in ``.skipped``).
    """

    name = "SHD"
    env_var = "SPIKING_SHD_ROOT"
    #: (channels, 1, polarities) as tonic orders it; 700 cochlea channels (Cramer et al. 2020).
    sensor_size = (700, 1, 1)
    #: Class ids 0-9 English "zero".."nine", 10-19 German "null".."neun" (Cramer et al. 2020,
    #: Sec. III; the ``extra/keys`` of the released files).
    classes: ClassVar[list] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
               "null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun"]
    dtype = SHD_DTYPE
    ordering = SHD_DTYPE.names
    #: Samples per split (Cramer et al. 2020, Table I).
    split_sizes: ClassVar[dict] = {"train": 8_156, "test": 2_264}
    #: Files. The authors distribute ``shd_<split>.h5.gz`` (https://zenkelab.org/datasets/, with an
    #: md5sums.txt there); tonic 1.7.0 (``tonic/datasets/hsd.py``) downloads the ``.h5.zip``
    #: variants with the MD5s below. Sizes were not recorded (unverifiable offline).
    archives: ClassVar[dict] = {
        "train": {"filename": "shd_train.h5.zip", "data_file": "shd_train.h5",
                  "original": "shd_train.h5.gz", "md5": "f3252aeb598ac776c1b526422d90eecb",
                  "url": "https://zenkelab.org/datasets/shd_train.h5.zip", "size_bytes": None},
        "test": {"filename": "shd_test.h5.zip", "data_file": "shd_test.h5",
                 "original": "shd_test.h5.gz", "md5": "1503a5064faa34311c398fb0a1ed0a6f",
                 "url": "https://zenkelab.org/datasets/shd_test.h5.zip", "size_bytes": None},
    }
    citation = ("Cramer, B., Stradmann, Y., Schemmel, J., Zenke, F. (2020). The Heidelberg "
                "spiking data sets for the systematic evaluation of spiking neural networks. IEEE "
                "Transactions on Neural Networks and Learning Systems 33(7):2744-2757. "
                "doi:10.1109/TNNLS.2020.3044364")
    licence = "CC BY 4.0"

    def __init__(self, root=None, train: bool = True, download: bool = False,
                 on_error: str = "raise", transform=None, target_transform=None,
                 file=None):
        self.on_error = check_on_error(on_error)
        self.train = bool(train)
        self.split = "train" if self.train else "test"
        self.transform, self.target_transform = transform, target_transform
        if file is not None:
            self.root, self.root_origin = Path(file).parent, "file argument"
            self.file = Path(file)
            if not self.file.is_file():
                raise missing_error(self.name, self.root, self.root_origin, [self.file],
                                    self.env_var, self.split)
        else:
            self.root, self.root_origin = resolve_root(root, self.env_var)
            self.file = self.data_file(self.root, self.split)
            if self.file is None and download:
                self.download(self.root, self.split)
                self.file = self.data_file(self.root, self.split)
            if self.file is None:
                arch = self.archives[self.split]
                raise missing_error(
                    self.name, self.root, self.root_origin,
                    [f"{self.root / 'SHD' / arch['data_file']} (unpacked {arch['filename']})"],
                    self.env_var, self.split)
        self._h5, self._pid = None, None
        self._load_index()
        report_skipped(self.name, self.skipped)

    @classmethod
    def data_file(cls, root: Path, split: str) -> Path | None:
        name = cls.archives[split]["data_file"]
        for cand in (root / cls.name / name, root / name):
            if cand.is_file():
                return cand
        return None

    def _load_index(self) -> None:
        h5py = _h5py()
        path = str(self.file)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise CorruptFileError(path, f"not a readable HDF5 file (truncated?): {e}") from None
        with f:
            try:
                missing = [k for k in REQUIRED_KEYS if k not in f]
                if missing:
                    raise CorruptFileError(path, f"missing HDF5 keys {missing}; an SHD file "
                                           f"has {list(REQUIRED_KEYS)}")
                labels = np.asarray(f["labels"][()])
                n_times, n_units = len(f["spikes/times"]), len(f["spikes/units"])
                keys = f["extra/keys"][()] if "extra/keys" in f else None
                speaker = f["extra/speaker"][()] if "extra/speaker" in f else None
            except CorruptFileError:
                raise
            except Exception as e:  # noqa: BLE001 - libhdf5 reports damage as many types
                raise CorruptFileError(
                    path, f"HDF5 data unreadable (truncated or damaged?): "
                    f"{type(e).__name__}: {e}") from None
        if labels.ndim != 1 or not (len(labels) == n_times == n_units):
            raise CorruptFileError(
                path, f"labels {labels.shape}, spikes/times ({n_times},) and spikes/units "
                f"({n_units},) must be 1-D of one length")
        if keys is not None and len(keys):
            self.classes = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        n_cls = len(self.classes)
        if not np.issubdtype(labels.dtype, np.integer):
            raise CorruptFileError(path, f"labels must be integers, got dtype {labels.dtype}")
        bad = (labels < 0) | (labels >= n_cls)
        self.skipped = []
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            reason = f"label {int(labels[i])} of sample {i} out of range 0..{n_cls - 1}"
            if self.on_error == "raise":
                raise CorruptFileError(path, reason + f" ({int(bad.sum())} bad labels)")
            self.skipped = [Skipped(f"{path}[{j}]", f"label {int(labels[j])} out of range "
                                    f"0..{n_cls - 1}") for j in np.flatnonzero(bad)]
        self.indices = np.flatnonzero(~bad)
        self.targets = labels[self.indices].astype(np.int64).tolist()
        self.speaker = None if speaker is None else np.asarray(speaker)[self.indices]

    def _handle(self):
        if self._h5 is None or self._pid != os.getpid():  # h5py handles do not survive fork
            try:
                self._h5, self._pid = _h5py().File(str(self.file), "r"), os.getpid()
            except OSError as e:
                raise CorruptFileError(self.file, f"not a readable HDF5 file: {e}") from None
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def read_raw(self, index: int):
        """(times float array in s, units int array) of sample ``index``, validated."""
        i = int(self.indices[index])
        f = self._handle()
        where = f"{self.file}[{i}]"
        try:
            times, units = np.asarray(f["spikes/times"][i]), np.asarray(f["spikes/units"][i])
        except Exception as e:  # noqa: BLE001 - libhdf5 reports damage as many types
            raise CorruptFileError(
                where, f"sample unreadable (truncated or damaged?): {type(e).__name__}: {e}"
            ) from None
        if not (np.issubdtype(times.dtype, np.floating) or np.issubdtype(times.dtype, np.integer)):
            raise CorruptFileError(where, f"spikes/times has dtype {times.dtype}, expected float")
        if not np.issubdtype(units.dtype, np.integer):
            raise CorruptFileError(where, f"spikes/units has dtype {units.dtype}, expected int")
        if times.shape != units.shape or times.ndim != 1:
            raise CorruptFileError(
                where, f"spikes/times {times.shape} and spikes/units {units.shape} differ")
        if times.size and not (np.isfinite(times).all() and times.min() >= 0):
            raise CorruptFileError(where, "spike times must be finite and >= 0 s")
        if units.size and (units.min() < 0 or units.max() >= self.sensor_size[0]):
            raise CorruptFileError(
                where, f"channel {int(units.max())} outside 0..{self.sensor_size[0] - 1}")
        return times, units

    def __getitem__(self, index: int):
        events = to_events(*self.read_raw(index))
        label = self.targets[index]
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return events, label

    @classmethod
    def download(cls, root, split: str) -> None:
        """Fetch and unpack the split with tonic's downloader (MD5-checked)."""
        try:
            import tonic
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("download=True needs tonic: pip install tonic") from e
        Path(root).mkdir(parents=True, exist_ok=True)
        tonic.datasets.SHD(save_to=str(root), train=split == "train")

    def sample_fingerprint(self, index: int) -> str:
        st = os.stat(self.file)
        return f"{os.path.abspath(self.file)}|{st.st_size}|{st.st_mtime_ns}|{self.indices[index]}"

    def cache_token(self) -> str:
        return f"{self.name}|{os.path.abspath(self.file)}|{len(self)}"

    def __repr__(self) -> str:
        return f"SHD(file={str(self.file)!r}, n={len(self)})"
