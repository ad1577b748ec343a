"""N-MNIST reader: the official ``Train|Test/<digit>/<nnnnn>.bin`` layout, decoded with numpy.

File format (Orchard et al. 2015; the dataset's own description and its MATLAB/Python readers,
mirrored by ``tonic.io.read_mnist_file``): every event is 5 bytes, 40 bits big-endian::

    byte 0: x (8 bit)   byte 1: y (8 bit)   byte 2: p (bit 7) | t[22:16]   byte 3: t[15:8]
    byte 4: t[7:0]      -> t is 23 bits of microseconds

A record with ``y == 240`` is a timestamp-overflow marker, not an event: every later timestamp
grows by ``2**13`` (the increment the dataset's reference reader and tonic use). Decoding here is
vectorised: ``t += 2**13 * cumsum(y == 240)``, then the markers are dropped. The result equals
tonic's reader element for element (``tests/datasets/test_nmnist.py`` checks it).
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

#: tonic's event dtype for N-MNIST (``tonic.datasets.NMNIST.dtype``): x, y, t (µs), p as int64.
NMNIST_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
#: Overflow marker and increment of the reference reader (Orchard's ``Read_Ndataset``; tonic io).
OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13


def decode_nmnist(raw, path="<bytes>", sensor_size=(34, 34)) -> np.ndarray:
    """Decode N-MNIST 40-bit events from ``raw`` (bytes or uint8 array) into ``NMNIST_DTYPE``.

    Raises :class:`CorruptFileError` naming ``path`` if the length is not a multiple of 5 or an
    event lies outside ``sensor_size`` (x, y); pass ``sensor_size=None`` to skip that check.
    """
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    if buf.size % 5:
        raise CorruptFileError(
            path, f"size {buf.size} bytes is not a multiple of 5 (40-bit events): truncated?")
    rec = buf.reshape(-1, 5).astype(np.int64)
    x, y = rec[:, 0], rec[:, 1]
    t = ((rec[:, 2] & 127) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    overflow = y == OVERFLOW_Y
    if overflow.any():
        t = t + OVERFLOW_INCREMENT_US * np.cumsum(overflow)
        keep = ~overflow
        x, y, t, rec = x[keep], y[keep], t[keep], rec[keep]
    if sensor_size is not None and x.size:
        w, h = sensor_size
        if x.max() >= w or y.max() >= h:
            raise CorruptFileError(
                path, f"event address outside the {w}x{h} sensor "
                f"(max x={int(x.max())}, max y={int(y.max())}): not an N-MNIST file?")
    out = np.empty(x.shape[0], dtype=NMNIST_DTYPE)
    out["x"], out["y"], out["t"], out["p"] = x, y, t, rec[:, 2] >> 7
    return out


def read_nmnist_file(path, sensor_size=(34, 34)) -> np.ndarray:
    """Read and decode one ``.bin`` file (see :func:`decode_nmnist`)."""
    with open(path, "rb") as f:
        raw = f.read()
    return decode_nmnist(raw, path=str(path), sensor_size=sensor_size)


class NMNIST(torch.utils.data.Dataset):
    """N-MNIST (Orchard et al. 2015): MNIST digits seen by an ATIS camera during 3 saccades.

    ``dataset[i]`` is ``(events, label)``: a structured array with fields ``x, y, t, p``
    (``t`` in µs, tonic's dtype and order) and an int in 0..9. Files are found under
    ``<root>/NMNIST/{Train,Test}/<digit>/*.bin`` (or ``<root>/{Train,Test}/...``); see
    :mod:`spiking.datasets.locate` for how ``root`` defaults. Missing files raise
    :class:`~spiking.datasets.locate.DatasetNotFoundError` (``download=True`` fetches them with
    tonic). Partial files raise :class:`CorruptFileError`, or are left out and reported with
    ``on_error="skip"`` (see ``.skipped``). ``verify="full"`` decodes every file up front.
    """

    name = "NMNIST"
    env_var = "SPIKING_NMNIST_ROOT"
    #: (W, H, P) as tonic orders it. Orchard et al. 2015: 34x34 pixels, ON/OFF polarities.
    sensor_size = (34, 34, 2)
    classes: ClassVar[list] = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
               "6 - six", "7 - seven", "8 - eight", "9 - nine"]  # tonic's class names
    dtype = NMNIST_DTYPE
    ordering = NMNIST_DTYPE.names
    #: Samples per split and saccades per recording (Orchard et al. 2015, Sec. 2-3).
    split_sizes: ClassVar[dict] = {"train": 60_000, "test": 10_000}
    saccades = 3
    #: Official archives on Mendeley Data (DOI 10.17632/468j46mzdv.1); URLs, names and MD5 as in
    #: tonic 1.7.0 ``tonic/datasets/nmnist.py``. Sizes were not recorded (unverifiable offline).
    archives: ClassVar[dict] = {
        "train": {"filename": "train.zip", "folder": "Train", "md5": "20959b8e626244a1b502305a9e6e2031",
                  "url": "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                         "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded", "size_bytes": None},
        "test": {"filename": "test.zip", "folder": "Test", "md5": "69ca8762b2fe404d9b9bad1103e97832",
                 "url": "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                        "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded", "size_bytes": None},
    }
    citation = ("Orchard, G., Jayawant, A., Cohen, G. K., Thakor, N. (2015). Converting static "
                "image datasets to spiking neuromorphic datasets using saccades. Frontiers in "
                "Neuroscience 9:437. doi:10.3389/fnins.2015.00437")
    licence = "CC BY 4.0 (Mendeley Data, doi:10.17632/468j46mzdv.1)"

    def __init__(self, root=None, train: bool = True, download: bool = False,
                 on_error: str = "raise", transform=None, target_transform=None,
                 verify: str = "size"):
        self.on_error = check_on_error(on_error)
        if verify not in ("size", "full"):
            raise ValueError(f'verify must be "size" or "full", got {verify!r}')
        self.train = bool(train)
        self.split = "train" if self.train else "test"
        self.transform, self.target_transform = transform, target_transform
        self.root, self.root_origin = resolve_root(root, self.env_var)
        folder = self.split_folder(self.root, self.split)
        if folder is None:
            if download:
                self.download(self.root, self.split)
                folder = self.split_folder(self.root, self.split)
            if folder is None:
                arch = self.archives[self.split]
                raise missing_error(
                    self.name, self.root, self.root_origin,
                    [(f"{self.root / 'NMNIST' / arch['folder']}/<digit 0-9>/<nnnnn>.bin "
                     f"({self.split_sizes[self.split]:,} files, from {arch['filename']})")],
                    self.env_var, self.split)
        self.folder = folder
        self.samples, self.skipped = self._scan(folder, full=verify == "full")
        self.targets = [label for _, label in self.samples]
        report_skipped(self.name, self.skipped)

    @classmethod
    def split_folder(cls, root: Path, split: str) -> Path | None:
        """``<root>/NMNIST/<Train|Test>`` (or ``<root>/<Train|Test>``) if it holds ``.bin`` files."""
        sub = cls.archives[split]["folder"]
        for cand in (root / cls.name / sub, root / sub):
            if cand.is_dir() and any(cand.glob("*/*.bin")):
                return cand
        return None

    def _scan(self, folder: Path, full: bool):
        samples, bad = [], []
        for d in sorted(os.scandir(folder), key=lambda e: e.name):
            if not d.is_dir():
                continue
            files = sorted(f for f in os.listdir(d.path) if f.endswith(".bin"))
            label = int(d.name) if d.name.isdigit() else None
            for fname in files:
                path = os.path.join(d.path, fname)
                reason = None
                if label is None or not 0 <= label < len(self.classes):
                    reason = (f"label folder {d.name!r} out of range "
                              f"(expected 0..{len(self.classes) - 1})")
                else:
                    size = os.path.getsize(path)
                    if size == 0 or size % 5:
                        reason = f"size {size} bytes is not a positive multiple of 5: truncated?"
                    elif full:
                        try:
                            read_nmnist_file(path, self.sensor_size[:2])
                        except CorruptFileError as e:
                            reason = e.reason
                if reason is None:
                    samples.append((path, label))
                elif self.on_error == "skip":
                    bad.append(Skipped(path, reason))
                else:
                    raise CorruptFileError(
                        path, reason + ' (pass on_error="skip" to load the rest)')
        return samples, bad

    @classmethod
    def download(cls, root, split: str) -> None:
        """Fetch and extract the official archive with tonic's downloader (MD5-checked)."""
        try:
            import tonic
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("download=True needs tonic: pip install tonic") from e
        Path(root).mkdir(parents=True, exist_ok=True)
        tonic.datasets.NMNIST(save_to=str(root), train=split == "train")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        events = read_nmnist_file(path, self.sensor_size[:2])
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return events, label

    def sample_fingerprint(self, index: int) -> str:
        """Identity of sample ``index`` on disk (path, size, mtime), for cache validation."""
        path = self.samples[index][0]
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"

    def cache_token(self) -> str:
        return f"{self.name}|{self.split}|{os.path.abspath(self.folder)}|{len(self)}"

    def __repr__(self) -> str:
        return f"NMNIST(split={self.split!r}, n={len(self)}, folder={str(self.folder)!r})"
