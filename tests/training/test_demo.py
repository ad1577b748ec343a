"""`spiking demo` end to end: the README's main job trains, re-evaluates and reports."""

import re
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spiking.cli", "demo", "--epochs", "1",
                        "--no-progress", "--out-dir", str(tmp_path), "--run-name", "d"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    acc = re.search(r"re-evaluated from .*: test accuracy ([0-9.]+) %", r.stdout)
    assert acc, r.stdout
    assert float(acc.group(1)) > 30.0  # ten digit classes: chance is 10 %; 1 epoch gives ~70 %
    report = (tmp_path / "d" / "report.md").read_text()
    assert "## Per epoch" in report and "### Hardware estimate" in report
    rows = re.findall(r"^\| (cmos45nm|loihi|spinnaker2|gpu_a100) \| ([0-9.]+) \|", report, re.M)
    assert {d for d, _ in rows} == {"cmos45nm", "loihi", "spinnaker2", "gpu_a100"}
    assert all(float(e) > 0 for _, e in rows)
    for f in ("checkpoint.pt", "curves.png", "confusion.png", "raster.png", "summary.json",
              "model.nir", "weightmap/manifest.json"):
        assert (tmp_path / "d" / f).is_file(), f
    # the demo's CSNN (sum pooling) exports: NIR file and SpiNNaker-like weight map
    assert "NIR export: `" in report and "Weight map (SpiNNaker-like mapping" in report
    assert "not available" not in report
