"""Event datasets: N-MNIST and SHD readers (tonic-compatible), binning, caching, collation.

Importing this package needs torch and numpy only; h5py (SHD) and tonic (downloads, optional
comparisons) are imported when used. The converters ``embedded`` (event-camera emulator) and
``audio`` (audio to spikes) are re-exported lazily when installed.
"""

from __future__ import annotations

import importlib

from spiking.datasets.binning import EventBinning, bin_events, bin_events_batch
from spiking.datasets.cache import BinnedDataset
from spiking.datasets.collate import collate_time_first
from spiking.datasets.locate import (
    CorruptFileError,
    DatasetNotFoundError,
    Skipped,
    cache_dir,
)
from spiking.datasets.nmnist import NMNIST, decode_nmnist, read_nmnist_file
from spiking.datasets.shd import SHD

#: Readers by the name the ``spiking data`` command uses.
DATASETS = {"nmnist": NMNIST, "shd": SHD}

_LAZY_MODULES = ("embedded", "audio", "emulator")

__all__ = [
    "DATASETS",
    "NMNIST",
    "SHD",
    "BinnedDataset",
    "CorruptFileError",
    "DatasetNotFoundError",
    "EventBinning",
    "Skipped",
    "bin_events",
    "bin_events_batch",
    "cache_dir",
    "collate_time_first",
    "decode_nmnist",
    "read_nmnist_file",
]


def __getattr__(name):
    # Submodules of the converters load on first use (``spiking.datasets.audio``).
    if name in _LAZY_MODULES:
        try:
            return importlib.import_module(f"spiking.datasets.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"spiking.datasets.{name}":
                raise AttributeError(f"spiking.datasets.{name} is not available") from None
            raise
    raise AttributeError(f"module 'spiking.datasets' has no attribute {name!r}")
