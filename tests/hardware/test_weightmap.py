"""Weight maps: round trip, validation of corrupt and tampered files, atomic writes."""

import json

import numpy as np
import pytest

from spiking.hardware import spinnaker as S
from spiking.hardware.weightmap import pynn_lists, read_weightmap, write_weightmap


def _mapping():
    pr = S.Projection("p", "in", "out", 3, 2, np.array([0, 1, 2]), np.array([0, 1, 1]),
                      np.array([0.5, -1.0, 0.25]), np.array([1, 2, 1], np.int16))
    return S.map_network({"in": 3, "out": 2}, [pr], S.Machine(neurons_per_core=2))


def test_round_trip(tmp_path):
    m = _mapping()
    g = np.full((2, 3, 2), 1e-6)
    path = write_weightmap(tmp_path / "wm", m, crossbar_tiles={"t0": g}, pynn=pynn_lists(m))
    wm = read_weightmap(path)
    p = wm["projections"][0]
    assert p["pre"].tolist() == [0, 1, 2] and p["delay"].tolist() == [1, 2, 1]
    assert p["weight"].tolist() == [0.5, -1.0, 0.25]
    q = m.quantised["p"]
    assert p["weight_fixed"].tolist() == q.weight_fixed.tolist()
    assert np.array_equal(wm["crossbar"]["t0"], g)
    assert wm["cores"]["start"].tolist() == [s.start for s in m.slices]
    assert wm["pynn"]["connectors"]["p"]["list"][1] == [1, 1, -1.0, 2.0]
    assert not list(tmp_path.glob(".wm*"))           # no temporary left behind


def test_tampered_file_is_rejected(tmp_path):
    path = write_weightmap(tmp_path / "wm", _mapping())
    f = path / "projections" / "0.npz"
    data = dict(np.load(f))
    data["weight"] = data["weight"] * 2
    np.savez(f, **data)
    with pytest.raises(ValueError, match=r"checksum mismatch for projections/0\.npz"):
        read_weightmap(path)


def test_truncated_and_missing_files(tmp_path):
    path = write_weightmap(tmp_path / "wm", _mapping())
    (path / "routing.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="routing.npz"):
        read_weightmap(path)
    path2 = write_weightmap(tmp_path / "wm2", _mapping())
    (path2 / "cores.npz").unlink()
    with pytest.raises(ValueError, match="cores.npz listed in the manifest is missing"):
        read_weightmap(path2)
    with pytest.raises(FileNotFoundError):
        read_weightmap(tmp_path / "nothing")


def test_bad_manifest(tmp_path):
    path = write_weightmap(tmp_path / "wm", _mapping())
    man = json.loads((path / "manifest.json").read_text())
    man["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="schema_version 99"):
        read_weightmap(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_weightmap(path)


def test_existing_target_needs_overwrite(tmp_path):
    write_weightmap(tmp_path / "wm", _mapping())
    with pytest.raises(ValueError, match="already exists"):
        write_weightmap(tmp_path / "wm", _mapping())
    write_weightmap(tmp_path / "wm", _mapping(), overwrite=True)
    assert read_weightmap(tmp_path / "wm")["manifest"]["schema_version"] == 1


def test_pynn_lists_of_a_model_give_delays_in_ms_and_cells():
    # the mapping counts delays in steps; PyNN wants ms: steps x the neurons' dt
    import torch
    from torch import nn

    import spiking
    from spiking.hardware.weightmap import pynn_from_model
    from spiking.models.delays import DelayedLinear

    torch.manual_seed(0)
    dt = 2e-3
    m = spiking.Sequential(DelayedLinear(nn.Conv1d(3, 4, 3, dilation=2)),
                           spiking.LIF(tau_mem=20e-3, dt=dt, threshold=0.5, reset="zero"),
                           nn.Linear(4, 2), spiking.LI(tau_mem=10e-3, dt=dt))
    x = (torch.rand(8, 1, 3) < 0.5).float()
    pops, projs, _ = S.network_from_model(m, x)
    mapping = S.map_network(pops, projs)
    out = pynn_from_model(m, mapping)
    first = out["connectors"]["input->pop1:0"]["list"]
    w = m[0].conv.weight.detach()
    for pre, post, weight, delay_ms in first:
        k = [kk for kk in range(3) if float(w[post, pre, kk]) == weight]
        assert len(k) == 1 and delay_ms == pytest.approx((1 + (2 - k[0]) * 2) * dt * 1e3)
    assert len(first) == 3 * 4 * 3 and out["timestep_ms"] == pytest.approx(2.0)
    assert out["cells"]["pop1"]["tau_m"] == pytest.approx(20.0)
    assert "note" not in out["cells"]["pop1"]
    assert "LI has no IF_curr_exp" in out["cells"]["pop3"]["unsupported"]
    m[3].dt = 1e-3
    with pytest.raises(ValueError, match="different dt"):
        pynn_from_model(m, mapping)
