"""Event-camera emulator: physics of the pixel model and the N-MNIST file round trip."""

import numpy as np
import pytest

from spiking.datasets.emulator import (
    EmulatorConfig,
    emulate,
    encode_nmnist,
    saccade_offsets,
    write_nmnist,
)
from spiking.datasets.nmnist import decode_nmnist, read_nmnist_file

CFG = EmulatorConfig()


def _bar(width=4):
    img = np.zeros((1, 28, 28))
    img[0, 4:24, 10:10 + width] = 1.0   # bright vertical bar on a dark background
    return img


def test_static_scene_produces_no_events():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (2, 28, 28))
    out = emulate(img, CFG, offsets=lambda t: (1.3, 2.7))
    assert [len(o) for o in out] == [0, 0]


def test_events_only_where_log_intensity_changes_past_threshold():
    img = _bar()
    sh = 1.5   # move right by 1.5 px over the recording

    def motion(t):
        return (sh * t / CFG.duration_s, 0.0)

    ev = emulate(img, CFG, offsets=motion)[0]
    assert len(ev) > 0
    # log intensity at start and end of the motion, per sensor pixel
    from spiking.datasets.emulator import _scene_sampler

    s = _scene_sampler(img, CFG)
    change = np.abs(s(sh, 0.0) - s(0.0, 0.0))[0]
    fired = np.zeros((34, 34), bool)
    fired[ev["y"], ev["x"]] = True
    assert fired[change > CFG.threshold + 1e-6].all()
    # pixels whose intensity never moved by a threshold stay silent (the motion is monotone)
    assert not fired[change < CFG.threshold - 1e-6].any()


def test_polarity_of_a_moving_bright_bar():
    ev = emulate(_bar(), CFG, offsets=lambda t: (2.0 * t / CFG.duration_s, 0.0))[0]
    # bar spans columns 10..13 and moves right: leading edge (x >= 14) gets brighter (ON),
    # trailing edge (x <= 11) darker (OFF)
    lead = ev[ev["x"] >= 14]
    trail = ev[ev["x"] <= 11]
    assert len(lead) and len(trail)
    assert (lead["p"] == 1).all()
    assert (trail["p"] == 0).all()


@pytest.mark.parametrize("refr", [1e-3, 5e-3])
def test_refractory_period_respected(refr):
    cfg = EmulatorConfig(refractory_s=refr, threshold=0.1)
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, (3, 28, 28))
    for ev in emulate(img, cfg):
        key = ev["y"] * 34 + ev["x"]
        order = np.lexsort((ev["t"], key))
        same = np.diff(key[order]) == 0
        gaps = np.diff(ev["t"][order])[same]
        assert gaps.size > 0
        assert gaps.min() >= round(refr * 1e6)


def test_saccades_follow_the_triangle_and_return():
    t = np.linspace(0, CFG.duration_s, 301)
    dx, dy = saccade_offsets(t, CFG)
    assert dx[0] == dy[0] == 0 and abs(dx[-1]) < 1e-12 and abs(dy[-1]) < 1e-12
    assert np.isclose(dx[100], 3) and np.isclose(dy[100], 6)
    assert np.isclose(dx[200], 6) and np.isclose(dy[200], 0)
    assert dx.min() >= 0 and dx.max() <= CFG.amplitude_px


def test_deterministic_with_seed_and_noise():
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 1, (2, 28, 28))
    cfg = EmulatorConfig(noise_hz=5.0)
    a, b, c = emulate(img, cfg, seed=3), emulate(img, cfg, seed=3), emulate(img, cfg, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # a sample's recording does not depend on its batch
    single = emulate(img[1:], cfg, seed=3, indices=[1])[0]
    assert np.array_equal(single, a[1])


def test_saccade_recording_looks_like_nmnist(tmp_path):
    from spiking.datasets.embedded import load_images

    imgs, _ = load_images()
    ev = emulate(imgs[:5], CFG)
    n = np.array([len(e) for e in ev])
    assert (n > 1000).all() and (n < 8000).all()   # N-MNIST: 1,069..7,152 (SOURCE.md)
    for e in ev:
        assert e["x"].max() <= 33 and e["y"].max() <= 33
        assert 0.3 < e["p"].mean() < 0.7
        assert e["t"].max() <= 300_000 and np.all(np.diff(e["t"]) >= 0)


def test_roundtrip_through_the_nmnist_reader(tmp_path):
    rng = np.random.default_rng(3)
    ev = emulate(rng.uniform(0, 1, (1, 28, 28)), CFG)[0]
    write_nmnist(tmp_path / "a.bin", ev)
    back = read_nmnist_file(tmp_path / "a.bin")
    assert back.dtype.names == ("x", "y", "t", "p")
    for f in "xytp":
        np.testing.assert_array_equal(back[f], ev[f])


def test_timestamp_overflow_markers_roundtrip():
    n = 50
    ev = np.zeros(n, dtype=[("x", "i8"), ("y", "i8"), ("t", "i8"), ("p", "i8")])
    ev["x"], ev["y"], ev["p"] = np.arange(n) % 34, 7, np.arange(n) % 2
    ev["t"] = np.sort(np.random.default_rng(0).integers(0, 3 * 2**23, n))
    raw = encode_nmnist(ev)
    rec = np.frombuffer(raw, np.uint8).reshape(-1, 5)
    assert (rec[:, 1] == 240).sum() > 0          # markers were needed
    back = decode_nmnist(raw)
    for f in "xytp":
        np.testing.assert_array_equal(back[f], ev[f])


def test_encode_rejects_bad_events():
    ev = np.zeros(2, dtype=[("x", "i8"), ("y", "i8"), ("t", "i8"), ("p", "i8")])
    ev["t"] = [5, 3]
    with pytest.raises(ValueError, match="non-decreasing"):
        encode_nmnist(ev)
    with pytest.raises(ValueError, match=r"\[B, 28, 28\]"):
        emulate(np.zeros((1, 8, 8)), CFG)
