"""Binning equals tonic.transforms.ToFrame, including its bin-edge conventions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spiking.datasets import NMNIST, EventBinning, bin_events, bin_events_batch

tonic = pytest.importorskip("tonic")
ToFrame = tonic.transforms.ToFrame

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SUBSET = DATA / "nmnist-subset"
needs_subset = pytest.mark.skipif(
    not (SUBSET / "NMNIST").is_dir(),
    reason=f"N-MNIST subset not found at {SUBSET} (set SPIKING_DATA to the shared data folder)")

CAM = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
AUD = np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)])
VARIANTS = [
    {"n_time_bins": 10},
    {"n_time_bins": 7, "overlap": 0.3},
    {"time_window": 10_000},
    {"time_window": 10_000, "include_incomplete": True},
    {"time_window": 10_000, "overlap": 2_500},
    {"time_window": 33_333.3, "overlap": 1_000, "include_incomplete": True},
    {"time_window": 25_000, "start_time": -5_000, "end_time": 320_000, "include_incomplete": True},
    {"time_window": 50_000, "start_time": 40_000, "end_time": 200_000},
]


def cam_events(t, x, y, p):
    ev = np.empty(len(t), dtype=CAM)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def reference(ev, sensor, **kw):
    return ToFrame(sensor_size=sensor, **kw)(ev.copy())   # ToFrame may edit p in place


@needs_subset
@pytest.mark.parametrize("kw", VARIANTS)
def test_equal_to_tonic_on_nmnist(kw):
    ds = NMNIST(root=SUBSET, train=False)
    evs = [ds[i][0] for i in range(0, 100, 9)]
    batch, lengths = bin_events_batch(evs, ds.sensor_size, **kw)
    for b, ev in enumerate(evs):
        ref = reference(ev, ds.sensor_size, **kw)
        one = bin_events(ev, ds.sensor_size, **kw)
        assert one.dtype == torch.float32 and tuple(one.shape) == ref.shape
        assert np.array_equal(one.numpy(), ref)
        assert int(lengths[b]) == ref.shape[0]
        assert np.array_equal(batch[: ref.shape[0], b].numpy(), ref)
        assert not batch[ref.shape[0]:, b].any()


def test_edge_conventions_by_hand():
    ev = cam_events([0, 100, 199, 200, 300], [0, 1, 2, 3, 1], [0] * 5, [1] * 5)
    sensor = (4, 1, 2)
    # time_window=100: floor((300-0-100)/100)+1 = 3 windows [0,100) [100,200) [200,300):
    # the event at exactly t_end=300 falls in none of them (half-open windows).
    out = bin_events(ev, sensor, time_window=100)
    assert out[:, 1, 0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    # include_incomplete with 300 = 3*100 still gives ceil(2)+1 = 3 windows.
    assert bin_events(ev, sensor, time_window=100, include_incomplete=True).shape[0] == 3
    # time_window=120: floor(180/120)+1 = 2 windows; ceil(1.5)+1 = 3 with include_incomplete.
    assert bin_events(ev, sensor, time_window=120).shape[0] == 2
    inc = bin_events(ev, sensor, time_window=120, include_incomplete=True)
    assert inc.shape[0] == 3 and inc[2].sum() == 1                # [240, 360) holds t=300
    # overlap: windows [0,100) [50,150) [100,200) ... events counted in every window they hit.
    ov = bin_events(ev, sensor, time_window=100, overlap=50)
    assert ov.sum(dim=(1, 2, 3)).tolist() == [1, 1, 2, 2, 1]
    # n_time_bins=2: window = 300 // 2 = 150: [0,150) [150,300); t=300 dropped.
    assert bin_events(ev, sensor, n_time_bins=2).sum(dim=(1, 2, 3)).tolist() == [2, 2]
    # n_time_bins=7: window = 300 // 7 = 42; 7*42 = 294 < 300, so t=300 is dropped too.
    assert bin_events(ev, sensor, n_time_bins=7).sum().item() == 4
    for kw in ({"time_window": 100}, {"time_window": 120, "include_incomplete": True},
               {"time_window": 100, "overlap": 50}, {"n_time_bins": 2}, {"n_time_bins": 7}):
        assert np.array_equal(bin_events(ev, sensor, **kw).numpy(), reference(ev, sensor, **kw))


def test_audio_shape_and_single_polarity():
    ev = np.empty(4, dtype=AUD)
    ev["t"], ev["x"], ev["p"] = [0, 10, 20, 40], [0, 699, 3, 3], 1
    out = bin_events(ev, (700, 1, 1), n_time_bins=2)
    ref = reference(ev, (700, 1, 1), n_time_bins=2)
    assert out.shape == (2, 700) and np.array_equal(out.numpy(), ref[:, 0])
    assert ev["p"].tolist() == [1, 1, 1, 1]                       # input not modified
    ev["p"][1] = 0
    with pytest.raises(ValueError, match="single polarity"):
        bin_events(ev, (700, 1, 1), n_time_bins=2)
    out2 = bin_events(ev, (700, 1, 2), time_window=15)    # floor((40-15)/15)+1 = 2 windows
    assert out2.shape == (2, 2, 700) and out2[0, 0, 699] == 1 and out2.sum() == 3
    assert np.array_equal(out2.numpy(), reference(ev, (700, 1, 2), time_window=15))


def test_empty_and_invalid_inputs():
    empty = cam_events([], [], [], [])
    assert bin_events(empty, (34, 34, 2), n_time_bins=5).shape == (5, 2, 34, 34)
    z = bin_events(empty, (34, 34, 2), time_window=1000)
    assert z.shape == (1, 2, 34, 34) and not z.any()
    ev = cam_events([0, 5, 3], [0, 0, 0], [0, 0, 0], [0, 1, 0])
    with pytest.raises(ValueError, match="sorted"):
        bin_events(ev, (34, 34, 2), n_time_bins=2)
    ev = cam_events([0, 5], [0, 34], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="x must lie in 0..33"):
        bin_events(ev, (34, 34, 2), n_time_bins=2)
    with pytest.raises(ValueError, match="exactly one"):
        bin_events(ev, (34, 34, 2), n_time_bins=2, time_window=10)
    with pytest.raises(ValueError, match="overlap"):
        EventBinning((34, 34, 2), time_window=10, overlap=10)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 60),
    kind=st.sampled_from(["bins", "window", "window_inc"]),
)
def test_random_events_equal_tonic(data, n, kind):
    t = np.sort(np.array(data.draw(st.lists(st.integers(0, 5_000), min_size=n, max_size=n))))
    x = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    y = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    p = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    ev = cam_events(t, x, y, p)
    if kind == "bins":
        kw = {"n_time_bins": data.draw(st.integers(1, 12)),
                  "overlap": data.draw(st.sampled_from([0.0, 0.1, 0.5]))}
    else:
        w = data.draw(st.integers(1, 2_000))
        kw = {"time_window": w, "overlap": data.draw(st.integers(0, w - 1)),
                  "include_incomplete": kind == "window_inc"}
    sensor = (5, 3, 2)
    ref = reference(ev, sensor, **kw)
    assert np.array_equal(bin_events(ev, sensor, **kw).numpy(), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@needs_subset
def test_gpu_batch_equals_cpu():
    ds = NMNIST(root=SUBSET, train=False)
    evs = [ds[i][0] for i in range(16)]
    gpu = [{k: torch.as_tensor(ev[k]).cuda() for k in ev.dtype.names} for ev in evs]
    for kw in ({"n_time_bins": 20}, {"time_window": 5_000, "overlap": 1_000}):
        a, la = bin_events_batch(evs, ds.sensor_size, **kw)
        b, lb = bin_events_batch(gpu, ds.sensor_size, **kw)
        assert b.is_cuda and torch.equal(a, b.cpu()) and torch.equal(la, lb.cpu())
