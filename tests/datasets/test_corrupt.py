"""Damaged inputs give named errors (CorruptFileError naming the file), never anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spiking.datasets import NMNIST, SHD, CorruptFileError, decode_nmnist

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SUBSET = DATA / "nmnist-subset"
FSDD = DATA / "fsdd-shd-format" / "fsdd_shd_format_test.h5"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_named_error(raw):
    try:
        ev = decode_nmnist(raw, path="fuzz.bin")
    except CorruptFileError as e:
        assert e.path == "fuzz.bin" and "fuzz.bin" in str(e)
        assert len(raw) % 5 or e.reason.startswith("event address")
        return
    assert len(raw) % 5 == 0 and len(ev) <= len(raw) // 5
    assert (ev["x"] < 34).all() and (ev["y"] < 34).all() and set(ev["p"]) <= {0, 1}
    assert (np.diff(ev["t"]) >= -(1 << 23)).all()


def _tree(root, files):
    for rel, raw in files.items():
        path = root / "NMNIST" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)


def test_partial_file_named_and_skippable(tmp_path):
    good = bytes([1, 2, 128, 0, 9]) * 4
    _tree(tmp_path, {"Train/3/00001.bin": good, "Train/3/00002.bin": good[:13],
                     "Train/5/00003.bin": good, "Train/5/00004.bin": b""})
    with pytest.raises(CorruptFileError) as e:
        NMNIST(root=tmp_path)
    assert e.value.path.endswith(os.path.join("3", "00002.bin")) and "multiple of 5" in str(e.value)
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = NMNIST(root=tmp_path, on_error="skip")
    assert len(ds) == 2 and ds.targets == [3, 5]
    assert sorted(Path(s.path).name for s in ds.skipped) == ["00002.bin", "00004.bin"]
    assert ds[0][0]["t"].tolist() == [9] * 4


def test_label_folder_out_of_range_and_bad_addresses(tmp_path):
    good = bytes([1, 2, 128, 0, 9])
    _tree(tmp_path, {"Test/10/00001.bin": good, "Test/4/00002.bin": bytes([40, 2, 0, 0, 1])})
    with pytest.raises(CorruptFileError, match="label folder '10' out of range"):
        NMNIST(root=tmp_path, train=False)
    with pytest.warns(UserWarning):
        ds = NMNIST(root=tmp_path, train=False, on_error="skip")
    with pytest.raises(CorruptFileError, match="outside the 34x34 sensor") as e:
        ds[0]
    assert e.value.path.endswith("00002.bin")
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = NMNIST(root=tmp_path, train=False, on_error="skip", verify="full")
    assert len(ds) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=0, max_size=3000))
def test_random_h5_bytes_named_error(tmp_path, raw):
    path = tmp_path / "shd_train.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + raw)
    with pytest.raises(CorruptFileError) as e:
        SHD(root=tmp_path)
    assert str(path) in str(e.value)


FUZZ = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from spiking.datasets import SHD, CorruptFileError
    src, out = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2])
    rng = np.random.default_rng(0)
    kinds = {}
    for trial in range(60):
        raw = bytearray(src)
        if trial % 3 == 0:
            raw = raw[: int(rng.integers(0, len(raw)))]
        else:
            for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 64))):
                raw[pos] = int(rng.integers(0, 256))
        ds = None
        (out / "shd_test.h5").unlink(missing_ok=True)   # a new file, not one HDF5 holds open
        (out / "shd_test.h5").write_bytes(bytes(raw))
        try:
            ds = SHD(root=out, train=False)
            for i in range(len(ds)):
                ds[i]
            kinds["ok"] = kinds.get("ok", 0) + 1
        except CorruptFileError as e:
            assert str(out / "shd_test.h5") in str(e), e
            kinds["CorruptFileError"] = kinds.get("CorruptFileError", 0) + 1
    print(sorted(kinds.items()))
""")


@pytest.mark.skipif(not FSDD.is_file(), reason=f"{FSDD} not found (set SPIKING_DATA)")
def test_damaged_hdf5_never_crashes_the_process(tmp_path):
    pytest.importorskip("h5py")
    # A separate process, so that a crash inside libhdf5 shows up as a failed test.
    r = subprocess.run([sys.executable, "-c", FUZZ, str(FSDD), str(tmp_path)],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "CorruptFileError" in r.stdout
