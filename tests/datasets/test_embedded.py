"""Default dataset: built from the bundled UCI digits, read by the N-MNIST reader, self-healing."""

import json

import numpy as np

from spiking.datasets import NMNIST
from spiking.datasets.embedded import MANIFEST, UCIDigits, ensure, verify


def test_ensure_builds_n_per_class_and_reader_reads_it(tmp_path):
    root = ensure(tmp_path / "d", n_train=2, n_test=1, seed=0)
    for split, n in (("Train", 2), ("Test", 1)):
        for c in range(10):
            assert len(list((root / "NMNIST" / split / str(c)).glob("*.bin"))) == n
    train = NMNIST(root=root, train=True)
    assert len(train) == 20
    ev, label = train[0]
    assert label == 0 and len(ev) > 500 and ev["x"].max() < 34
    assert len(NMNIST(root=root, train=False)) == 10
    # test files come from the last 297 images
    names = [int(p.stem) for p in (root / "NMNIST" / "Test").glob("*/*.bin")]
    assert min(names) > UCIDigits.n_images - UCIDigits.n_test


def test_corrupt_file_is_rebuilt_and_params_change_rebuilds(tmp_path):
    root = ensure(tmp_path / "d", n_train=1, n_test=1)
    f = sorted((root / "NMNIST" / "Train" / "3").glob("*.bin"))[0]
    good = f.read_bytes()
    f.write_bytes(good[:-5] + b"\x00" * 5)
    assert not verify(root)[0]
    mtime_manifest = (root / MANIFEST).stat().st_mtime_ns
    root2 = ensure(tmp_path / "d", n_train=1, n_test=1)
    assert root2 == root and f.read_bytes() == good and verify(root)[0]
    # unchanged build is reused
    assert ensure(tmp_path / "d", n_train=1, n_test=1) == root
    assert (root / MANIFEST).stat().st_mtime_ns >= mtime_manifest
    ensure(tmp_path / "d", n_train=2, n_test=1)
    assert json.loads((root / MANIFEST).read_text())["params"]["n_train_per_class"] == 2
    assert len(list((root / "NMNIST" / "Train" / "3").glob("*.bin"))) == 2
    assert not list(tmp_path.glob(".d.*"))     # no temp folders left behind


def test_deterministic_build(tmp_path):
    a = ensure(tmp_path / "a", n_train=1, n_test=1, seed=5)
    b = ensure(tmp_path / "b", n_train=1, n_test=1, seed=5)
    fa = sorted(p.relative_to(a) for p in a.glob("NMNIST/*/*/*.bin"))
    assert fa == sorted(p.relative_to(b) for p in b.glob("NMNIST/*/*/*.bin"))
    assert all(np.array_equal(np.fromfile(a / p, np.uint8), np.fromfile(b / p, np.uint8))
               for p in fa)
