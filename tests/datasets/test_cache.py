"""Binned dataset disk cache (atomic, rebuilt when corrupt or stale) and time-first collation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spiking.datasets import NMNIST, BinnedDataset, bin_events, collate_time_first

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SUBSET = DATA / "nmnist-subset"
needs_subset = pytest.mark.skipif(
    not (SUBSET / "NMNIST").is_dir(),
    reason=f"N-MNIST subset not found at {SUBSET} (set SPIKING_DATA to the shared data folder)")


@pytest.fixture
def small_nmnist(tmp_path):
    """Six genuine test recordings copied into a private root (so they can be touched)."""
    src = SUBSET / "NMNIST" / "Test"
    if not src.is_dir():
        pytest.skip(f"N-MNIST subset not found at {SUBSET} (set SPIKING_DATA)")
    for digit in ("1", "7"):
        files = sorted((src / digit).glob("*.bin"))[:3]
        (tmp_path / "NMNIST" / "Test" / digit).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / "NMNIST" / "Test" / digit / f.name)
    return NMNIST(root=tmp_path, train=False)


def test_cache_hit_equals_fresh_binning(small_nmnist, tmp_path):
    cache = tmp_path / "cache"
    ds = BinnedDataset(small_nmnist, n_time_bins=12, cache_dir=cache)
    first = [ds[i] for i in range(len(ds))]
    assert ds.misses == len(ds) and ds.hits == 0
    again = [ds[i] for i in range(len(ds))]
    assert ds.hits == len(ds)
    for i, ((a, la), (b, lb)) in enumerate(zip(first, again)):
        ev, label = small_nmnist[i]
        ref = bin_events(ev, small_nmnist.sensor_size, n_time_bins=12)
        assert la == lb == label and a.dtype == torch.float32
        assert torch.equal(a, ref) and torch.equal(b, ref)
    assert not list(ds.cache_path.glob("*.tmp"))          # atomic writes leave no temp files
    assert (ds.cache_path / "params.json").is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty", "tamper"])
def test_corrupt_entry_is_rebuilt(small_nmnist, tmp_path, damage):
    ds = BinnedDataset(small_nmnist, time_window=20_000, cache_dir=tmp_path / "c")
    good, label = ds[2]
    entry = ds.cache_path / "2.npz"
    raw = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x00garbage" * 50)
    elif damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:   # a well-formed entry whose frames no longer match their digest
        with np.load(entry) as z:
            parts = dict(z)
        parts["frames"] = parts["frames"] + 1
        np.savez(entry, **parts)
    fresh = BinnedDataset(small_nmnist, time_window=20_000, cache_dir=tmp_path / "c")
    again, label2 = fresh[2]
    assert fresh.rebuilt == 1 and torch.equal(again, good) and label2 == label
    fresh2 = BinnedDataset(small_nmnist, time_window=20_000, cache_dir=tmp_path / "c")
    assert torch.equal(fresh2[2][0], good) and fresh2.hits == 1 and fresh2.rebuilt == 0


def test_stale_entry_after_source_change(small_nmnist, tmp_path):
    ds = BinnedDataset(small_nmnist, n_time_bins=5, cache_dir=tmp_path / "c")
    before, _ = ds[0]
    src = Path(small_nmnist.samples[0][0])
    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) // 2 // 5 * 5])      # the recording changed on disk
    after, _ = ds[0]
    assert ds.rebuilt == 1 and not torch.equal(before, after)
    assert torch.equal(after, bin_events(small_nmnist[0][0], (34, 34, 2), n_time_bins=5))


def test_key_depends_on_parameters_and_tonic_transform(small_nmnist, tmp_path):
    tonic = pytest.importorskip("tonic")
    a = BinnedDataset(small_nmnist, n_time_bins=5, cache_dir=tmp_path)
    b = BinnedDataset(small_nmnist, n_time_bins=6, cache_dir=tmp_path)
    c = BinnedDataset(small_nmnist, n_time_bins=5, overlap=0.2, cache_dir=tmp_path)
    t = BinnedDataset(small_nmnist, cache_dir=tmp_path,
                      transform=tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=5))
    assert len({a.cache_path, b.cache_path, c.cache_path, t.cache_path}) == 4
    assert torch.equal(t[1][0], a[1][0]) and torch.equal(t[1][0], t[1][0])
    assert t.misses == 1 and t.hits == 2
    with pytest.raises(ValueError, match="not both"):
        BinnedDataset(small_nmnist, n_time_bins=5, transform=lambda e: e)


def test_collate_time_first_pads_and_reports_lengths():
    batch = [(torch.ones(3, 2, 4), 1), (torch.full((5, 2, 4), 2.0), 0), (torch.ones(1, 2, 4), 9)]
    x, labels, lengths = collate_time_first(batch)
    assert x.shape == (5, 3, 2, 4) and labels.tolist() == [1, 0, 9]
    assert lengths.tolist() == [3, 5, 1]
    assert x[:3, 0].eq(1).all() and not x[3:, 0].any() and x[:, 1].eq(2).all()
    assert not x[1:, 2].any()
    with pytest.raises(ValueError, match="item 1"):
        collate_time_first([(torch.ones(3, 2), 0), (torch.ones(3, 4), 0)])


@needs_subset
def test_dataloader_variable_length(small_nmnist):
    ds = BinnedDataset(small_nmnist, time_window=25_000)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_time_first)
    x, labels, lengths = next(iter(loader))
    assert x.shape[1:] == (4, 2, 34, 34) and x.shape[0] == int(lengths.max())
    for b in range(4):
        ref, label = ds[b]
        assert labels[b] == label and lengths[b] == ref.shape[0]
        assert torch.equal(x[: ref.shape[0], b], ref) and not x[ref.shape[0]:, b].any()
