"""N-MNIST reader against the genuine subset, its SOURCE.md reference values and tonic's reader."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from spiking.datasets import NMNIST, DatasetNotFoundError, cache_dir, decode_nmnist
from spiking.datasets.nmnist import read_nmnist_file

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SUBSET = DATA / "nmnist-subset"
needs_subset = pytest.mark.skipif(
    not (SUBSET / "NMNIST").is_dir(),
    reason=f"N-MNIST subset not found at {SUBSET} (set SPIKING_DATA to the shared data folder)")


@needs_subset
@pytest.mark.parametrize("train, counts", [
    (True, [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]),   # SOURCE.md table
    (False, [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]),
])
def test_subset_sizes_and_class_counts(train, counts):
    ds = NMNIST(root=SUBSET, train=train)
    assert len(ds) == sum(counts)
    assert np.bincount(ds.targets, minlength=10).tolist() == counts


@needs_subset
def test_reference_events_of_train_0_00002():
    ds = NMNIST(root=SUBSET, train=True)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith(os.path.join("0", "00002.bin"))]
    events, label = ds[idx[0]]
    assert label == 0 and len(events) == 5028
    assert events.dtype.names == ("x", "y", "t", "p")
    assert events["x"][:3].tolist() == [10, 33, 12]
    assert events["y"][:3].tolist() == [30, 20, 27]
    assert events["p"][:3].tolist() == [1, 1, 1]
    assert events["t"][:3].tolist() == [937, 1030, 1052]


@needs_subset
def test_equal_to_tonic_dataset(monkeypatch):
    tonic = pytest.importorskip("tonic")
    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)
    for train in (True, False):
        ref = tonic.datasets.NMNIST(save_to=str(SUBSET), train=train)
        ds = NMNIST(root=SUBSET, train=train)
        assert len(ds) == len(ref) and ds.targets == list(ref.targets)
        for i in range(0, len(ds), 1 if not train else 7):
            a, la = ds[i]
            b, lb = ref[i]
            assert la == lb and a.dtype == b.dtype and np.array_equal(a, b)


def test_tonic_sample_file_equal():
    tonic = pytest.importorskip("tonic")
    path = DATA / "nmnist-tonic-sample" / "sample_nmnist.bin"
    if not path.is_file():
        pytest.skip(f"{path} not found (set SPIKING_DATA)")
    ref = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    assert np.array_equal(read_nmnist_file(path), ref)


def _record(x, y, p, t):
    return bytes([x, y, (p << 7) | ((t >> 16) & 127), (t >> 8) & 255, t & 255])


def test_overflow_records_shift_later_timestamps():
    raw = (_record(1, 2, 1, 100) + _record(0, 240, 0, 0) + _record(3, 4, 0, 5)
           + _record(0, 240, 0, 0) + _record(5, 6, 1, (1 << 23) - 1))
    ev = decode_nmnist(raw)
    # Hand-computed: markers are dropped; each one adds 2**13 µs to every later event.
    assert ev["x"].tolist() == [1, 3, 5] and ev["y"].tolist() == [2, 4, 6]
    assert ev["p"].tolist() == [1, 0, 1]
    assert ev["t"].tolist() == [100, 5 + 8192, (1 << 23) - 1 + 2 * 8192]
    tonic = pytest.importorskip("tonic")
    ref = tonic.io.read_mnist_file(io.BytesIO(raw), dtype=tonic.datasets.NMNIST.dtype,
                                   is_stream=True)
    assert np.array_equal(ev, ref)


def test_missing_files_error_lists_files_and_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        NMNIST(root=tmp_path / "nowhere", train=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "NMNIST" / "Test") in msg
    assert "spiking data download nmnist --root" in msg and "download=True" in msg


@needs_subset
def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SPIKING_NMNIST_ROOT", raising=False)
    monkeypatch.setenv("SPIKING_DATA_ROOT", str(SUBSET))
    ds = NMNIST(train=False)
    assert ds.root_origin == "$SPIKING_DATA_ROOT" and len(ds) == 100
    monkeypatch.setenv("SPIKING_NMNIST_ROOT", str(tmp_path))   # per-dataset variable wins
    with pytest.raises(DatasetNotFoundError, match="SPIKING_NMNIST_ROOT"):
        NMNIST(train=False)
    ds = NMNIST(root=SUBSET / "NMNIST", train=False)           # the NMNIST folder itself
    assert len(ds) == 100


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "spiking"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "spiking"
    monkeypatch.delenv("SPIKING_NMNIST_ROOT", raising=False)
    monkeypatch.delenv("SPIKING_DATA_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="user cache"):
        NMNIST()
