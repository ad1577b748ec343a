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
    assert main(["export", str(ck), "--format", "nir", "--steps", "5",
                 "--out", str(tmp_path / "m.nir")]) == 0
    assert (tmp_path / "m.nir").stat().st_size > 0


def test_demo_section(tmp_path):
    torch.manual_seed(0)
    m = spiking.Sequential(nn.Linear(6, 5), spiking.LIF(threshold=0.2))
    x = (torch.rand(10, 3, 6) < 0.5).float()
    md = demo_section(m, (x, None), out_dir=tmp_path)
    assert "not measured" in md and "loihi" in md and "model.nir" in md
