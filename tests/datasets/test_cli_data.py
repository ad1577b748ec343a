"""`spiking data` subcommands, run through spiking.datasets.cli.main."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from spiking.datasets.cli import main

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SUBSET = DATA / "nmnist-subset"
FSDD = DATA / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
needs_subset = pytest.mark.skipif(
    not (SUBSET / "NMNIST").is_dir(),
    reason=f"N-MNIST subset not found at {SUBSET} (set SPIKING_DATA to the shared data folder)")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("SPIKING_DATA_ROOT", "SPIKING_NMNIST_ROOT", "SPIKING_SHD_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@needs_subset
def test_list_and_info(capsys):
    assert main(["list", "--root", str(SUBSET)]) == 0
    out = capsys.readouterr().out
    assert "nmnist" in out and "found here: train, test" in out and "shd" in out
    # the datasets the package builds itself are listed too (not built in this fresh cache)
    assert "digits " in out and "fsdd-shd " in out and out.count("built on first use") == 2
    assert main(["info", "nmnist", "--root", str(SUBSET)]) == 0
    out = capsys.readouterr().out
    assert "1,000 .bin files" in out and "100 .bin files" in out
    assert "20959b8e626244a1b502305a9e6e2031" in out and "Orchard" in out


def test_info_missing_shows_expected_paths(capsys, tmp_path):
    assert main(["info", "shd"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "xdg" / "spiking" / "SHD" / "shd_train.h5") + ": MISSING" in out
    assert "user cache" in out and "CC BY 4.0" in out


@needs_subset
def test_verify_clean_and_corrupt(capsys, tmp_path):
    assert main(["verify", "nmnist", "--root", str(SUBSET)]) == 0
    out = capsys.readouterr().out
    assert "1100 files checked" in out and "0 problem(s)" in out and "0 corrupt" in out
    root = tmp_path / "copy"
    shutil.copytree(SUBSET / "NMNIST" / "Test" / "1", root / "NMNIST" / "Test" / "1")
    bad = min((root / "NMNIST" / "Test" / "1").glob("*.bin"))
    bad.write_bytes(bad.read_bytes()[:-2])
    assert main(["verify", "nmnist", "--root", str(root), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert str(bad) in out and "1 corrupt" in out


@needs_subset
def test_show_frames_and_gif(tmp_path, capsys):
    png, gif = tmp_path / "f.png", tmp_path / "f.gif"
    assert main(["show", "nmnist", "--root", str(SUBSET), "--index", "3", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert main(["show", "nmnist", "--root", str(SUBSET), "--split", "test", "--bins", "3",
                 "--out", str(gif)]) == 0
    assert gif.read_bytes()[:3] == b"GIF"


@pytest.mark.skipif(not FSDD.is_file(), reason=f"{FSDD} not found (set SPIKING_DATA)")
def test_show_audio_raster(tmp_path, capsys):
    png = tmp_path / "r.png"
    assert main(["show", "shd", "--file", str(FSDD), "--split", "test", "--index", "5",
                 "--out", str(png)]) == 0
    assert png.stat().st_size > 1000 and "spikes" in capsys.readouterr().out


@needs_subset
def test_download_skips_present(capsys):
    assert main(["download", "nmnist", "--root", str(SUBSET)]) == 0
    assert capsys.readouterr().out.count("already present") == 2


def test_converter_subcommands_registered(capsys):
    for name in ("emulate", "audio2spikes"):
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert name in capsys.readouterr().out
