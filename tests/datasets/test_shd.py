"""SHD reader on the FSDD->SHD-format file, tonic's reader, and tiny files written here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spiking.datasets import SHD, CorruptFileError, DatasetNotFoundError

h5py = pytest.importorskip("h5py")

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
FSDD = DATA / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
needs_fsdd = pytest.mark.skipif(
    not FSDD.is_file(), reason=f"{FSDD} not found (set SPIKING_DATA to the shared data folder)")


def write_shd(path, times, units, labels, keys=None, speaker=None, time_dtype=np.float16):
    """Write an SHD-layout file: vlen times (float16 s) and units (uint16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        tt = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(time_dtype))
        uu = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(zip(times, units)):
            tt[i] = np.asarray(t, dtype=time_dtype)
            uu[i] = np.asarray(u, dtype=np.uint16)
        f["labels"] = np.asarray(labels, dtype=np.uint16)
        if keys is not None:
            f["extra/keys"] = np.asarray(keys, dtype="S")
        if speaker is not None:
            f["extra/speaker"] = np.asarray(speaker, dtype=np.uint16)
    return path


@needs_fsdd
def test_fsdd_file_matches_source_md():
    ds = SHD(file=FSDD, train=False)
    assert len(ds) == 60
    assert np.bincount(ds.targets).tolist() == [6] * 10
    assert ds.classes == ["zero", "one", "two", "three", "four", "five", "six", "seven",
                          "eight", "nine"]
    n = [len(ds[i][0]) for i in range(len(ds))]
    assert sum(n) == 245_925 and min(n) == 2_036 and max(n) == 7_211
    ev, _ = ds[0]
    assert ev.dtype.names == ("t", "x", "p") and (ev["p"] == 1).all()
    assert 0 <= ev["x"].min() and ev["x"].max() < 700
    assert np.bincount(ds.speaker).tolist() == [10] * 6


@needs_fsdd
def test_equal_to_tonic_reader(monkeypatch, tmp_path):
    tonic = pytest.importorskip("tonic")
    (tmp_path / "SHD").mkdir()
    os.symlink(FSDD, tmp_path / "SHD" / "shd_test.h5")
    monkeypatch.setattr(tonic.datasets.SHD, "_check_exists", lambda self: True)
    ref = tonic.datasets.SHD(save_to=str(tmp_path), train=False)
    ds = SHD(root=tmp_path, train=False)
    assert len(ds) == len(ref) == 60
    for i in range(len(ds)):
        (a, la), (b, lb) = ds[i], ref[i]
        assert la == int(lb) and a.dtype == b.dtype and np.array_equal(a, b)


def test_float16_times_cast_before_scaling(tmp_path):
    # float16: 1.0 and 1.5 are exact; float16(0.1) = 0.0999755859375 (1638/16384).
    times = [[0.0, 0.1, 1.0, 1.5]]
    path = write_shd(tmp_path / "SHD" / "shd_train.h5", times, [[0, 5, 699, 3]], [7])
    ds = SHD(root=tmp_path, train=True)
    ev, label = ds[0]
    assert label == 7
    # float16 * 1e6 would overflow to inf (max 65504); float64 first gives exact µs.
    assert ev["t"].tolist() == [0, 99975, 1_000_000, 1_500_000]
    assert ev["x"].tolist() == [0, 5, 699, 3] and ev["p"].tolist() == [1, 1, 1, 1]
    assert ds.classes == SHD.classes and len(ds.classes) == 20
    assert path.is_file()


def test_env_var_and_missing(monkeypatch, tmp_path):
    write_shd(tmp_path / "shd_test.h5", [[0.5]], [[1]], [19])
    monkeypatch.setenv("SPIKING_SHD_ROOT", str(tmp_path))
    ds = SHD(train=False)
    assert ds.root_origin == "$SPIKING_SHD_ROOT" and ds[0][1] == 19
    with pytest.raises(DatasetNotFoundError) as e:
        SHD(train=True)
    assert "shd_train.h5" in str(e.value) and "spiking data download shd" in str(e.value)


def test_label_out_of_range_and_skip(tmp_path):
    path = write_shd(tmp_path / "shd_train.h5", [[0.1], [0.2], [0.3]], [[1], [2], [3]],
                     [3, 25, 4])
    with pytest.raises(CorruptFileError, match="label 25") as e:
        SHD(root=tmp_path)
    assert str(path) in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = SHD(root=tmp_path, on_error="skip")
    assert len(ds) == 2 and ds.targets == [3, 4] and ds[1][0]["x"].tolist() == [3]
    assert len(ds.skipped) == 1 and "[1]" in ds.skipped[0].path


def test_missing_keys_and_bad_samples(tmp_path):
    path = tmp_path / "shd_train.h5"
    with h5py.File(path, "w") as f:
        f["labels"] = np.zeros(2, dtype=np.uint16)
    with pytest.raises(CorruptFileError, match="missing HDF5 keys") as e:
        SHD(root=tmp_path)
    assert str(path) in str(e.value)
    write_shd(path, [[0.1, 0.2]], [[1, 700]], [0])     # channel 700 does not exist
    with pytest.raises(CorruptFileError, match="channel 700"):
        SHD(root=tmp_path)[0]
    write_shd(path, [[0.1, 0.2]], [[1]], [0])          # lengths differ
    with pytest.raises(CorruptFileError, match="differ"):
        SHD(root=tmp_path)[0]


@needs_fsdd
def test_truncated_file_named(tmp_path):
    raw = FSDD.read_bytes()
    for frac in (0.05, 0.5, 0.99):
        path = tmp_path / "shd_test.h5"
        path.write_bytes(raw[: int(len(raw) * frac)])
        with pytest.raises(CorruptFileError) as e:
            ds = SHD(root=tmp_path, train=False)
            for i in range(len(ds)):
                ds[i]
        assert str(path) in str(e.value)
