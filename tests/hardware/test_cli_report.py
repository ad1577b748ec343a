"""`spiking profile` / `spiking export` on a torch.save'd Sequential, and demo_section."""

import json

import torch
from torch import nn

import spiking
from spiking.cli import main
from spiking.hardware.report import demo_section
from spiking.hardware.weightmap import read_weightmap


def _saved(tmp_path):
    torch.manual_seed(0)
    m = spiking.Sequential(nn.Linear(12, 16), spiking.LIF(threshold=0.2), nn.Linear(16, 4),
                           spiking.LIF(threshold=0.2))
    p = tmp_path / "model.pt"
    torch.save(m, p)
    return p


def test_profile_writes_markdown_json_plots(tmp_path, capsys):
    ck = _saved(tmp_path)
    out = tmp_path / "rep"
    assert main(["profile", str(ck), "--hardware", "loihi", "--steps", "20", "--rate", "0.5",
                 "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "estimate" in md and "Raw counts" in md
    js = json.loads((out / "report.json").read_text())
    assert js["hardware"] == "loihi" and js["energy"][0]["total_j"] > 0
    assert js["counts"]["totals"]["effective_acs"] > 0
    for f in ("energy_breakdown.png", "core_load.png", "packets_per_step.png", "raster.png"):
        assert (out / f).stat().st_size > 0


def test_export_formats(tmp_path):
    ck = _saved(tmp_path)
    assert main(["export", str(ck), "--format", "weightmap", "--steps", "5",
                 "--out", str(tmp_path / "wm")]) == 0
    wm = read_weightmap(tmp_path / "wm")
    assert len(wm["projections"]) == 2 and wm["pynn"] is not None
    assert main(["export", str(ck), "--format", "pynn", "--steps", "5",
                 "--out", str(tmp_path / "pynn")]) == 0
    pynn = json.loads((tmp_path / "pynn" / "pynn.json").read_text())
    assert set(pynn["cells"]) == {"pop1", "pop3"} and pynn["cells"]["pop1"]["tau_m"] > 0
    assert pynn["connectors"] == wm["pynn"]["connectors"]
    assert main(["export", str(ck), "--format", "nir", "--steps", "5",
                 "--out", str(tmp_path / "m.nir")]) == 0
    assert (tmp_path / "m.nir").stat().st_size > 0


def test_demo_section(tmp_path):
    torch.manual_seed(0)
    m = spiking.Sequential(nn.Linear(6, 5), spiking.LIF(threshold=0.2))
    x = (torch.rand(10, 3, 6) < 0.5).float()
    md = demo_section(m, (x, None), out_dir=tmp_path)
    assert "not measured" in md and "loihi" in md and "model.nir" in md


def test_export_crossbar_tiles(tmp_path):
    import numpy as np

    from spiking.hardware import crossbar as C

    ck = _saved(tmp_path)
    model = torch.load(ck, weights_only=False)
    assert main(["export", str(ck), "--format", "crossbar", "--steps", "5",
                 "--out", str(tmp_path / "xb")]) == 0
    wm = read_weightmap(tmp_path / "xb")
    man = wm["manifest"]
    dev, _ = C.load_device("rram")
    assert man["crossbar_device"]["levels"] == dev.levels and len(wm["projections"]) == 2
    assert set(wm["crossbar"]) == {"0.r0c0", "2.r0c0"}
    g = np.concatenate([t.ravel() for t in wm["crossbar"].values()])
    # drift only lowers conductances, faults pin them to g_min / g_max
    assert g.min() >= dev.g_min * (dev.t_read / dev.drift_t0) ** -1 and g.max() <= dev.g_max
    # an ideal device: the tiles give back the weights
    ideal = tmp_path / "ideal.toml"
    ideal.write_text('name = "ideal"\nsource = "test"\n[values]\ne_synop_pj = 1\n[crossbar]\n'
                     'g_min_siemens = 1e-6\ng_max_siemens = 1e-4\nrows_count = 8\n'
                     'cols_count = 6\n')
    assert main(["export", str(ck), "--format", "crossbar", "--device", str(ideal),
                 "--out", str(tmp_path / "xb2")]) == 0
    wm = read_weightmap(tmp_path / "xb2")
    meta = {t["name"]: t for t in wm["manifest"]["crossbar"]}
    assert len(meta) == 2 * 6 + 2 * 2                      # 12x16 and 16x4 on 8x3 tiles
    for layer, lin in (("0", model[0]), ("2", model[2])):
        w = C.weights_from_tiles(wm["crossbar"], meta, layer)
        assert torch.allclose(w, lin.weight.detach().double(), rtol=1e-6, atol=1e-9)


def _training_checkpoint(tmp_path, with_data: bool):
    from spiking.models.registry import get_model
    from spiking.training import checkpoint
    from spiking.training.config import Config

    cfg = Config(model="csnn", dataset="nmnist", data_root=str(tmp_path / "no-such-data"),
                 model_args={"channels": [2, 4]})
    torch.manual_seed(0)
    m = get_model("csnn", input_shape=(2, 34, 34), n_classes=10, dt=30e-3, channels=[2, 4])
    data = {"input_shape": [2, 34, 34], "n_classes": 10, "dt": 30e-3} if with_data else None
    return checkpoint.save(tmp_path / "run" / "checkpoint.pt", config=cfg.to_dict(), epoch=1,
                           model=m, data=data), m


def test_profile_reads_training_checkpoints(tmp_path, capsys):
    path, m = _training_checkpoint(tmp_path, with_data=True)
    from spiking.hardware.cli import load_model

    loaded = load_model(path.parent)  # a run folder works as well as the file
    for a, b in zip(m.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    out = tmp_path / "rep"
    assert main(["profile", str(path), "--steps", "4", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "spinnaker2" in md and "no mapping" in md  # CSNN pools: energy table, no core map


def test_profile_old_checkpoint_without_data_is_a_clear_error(tmp_path, capsys):
    path, _ = _training_checkpoint(tmp_path, with_data=False)
    assert main(["profile", str(path), "--steps", "4", "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "does not record its input shape" in err and "nmnist" in err


def test_demo_section_writes_nir_and_weightmap_for_pooled_csnn(tmp_path):
    from spiking.hardware.export import from_nir
    from spiking.models.csnn import CSNN

    torch.manual_seed(0)
    m = CSNN(channels=(2, 4), input_size=(16, 16), pool_kind="avg", threshold=0.2).eval()
    x = (torch.rand(5, 3, 2, 16, 16) < 0.4).float()
    md = demo_section(m, (x, None), out_dir=tmp_path / "a")
    assert "model.nir" in md and "weightmap" in md and "cores" in md, md
    wm = read_weightmap(tmp_path / "a" / "weightmap")
    assert wm["manifest"]["populations"] == {"input": 512, "pop2": 72, "pop5": 4, "pop8": 10}
    assert len(wm["projections"]) == 3
    with torch.no_grad():
        y, _ = m.to_sequential()(x)
        y2, _ = from_nir(tmp_path / "a" / "model.nir")(x)
    assert torch.equal(y, y2)
    # max pooling: one-line notes, no exports, no crash
    md = demo_section(CSNN(channels=(2, 4), input_size=(16, 16)), x, out_dir=tmp_path / "b")
    assert md.count("not available") == 2 and "max pooling" in md
    assert not (tmp_path / "b" / "model.nir").exists()
    assert not (tmp_path / "b" / "weightmap").exists()
