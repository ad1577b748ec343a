import subprocess
import sys

import pytest

from spiking import cli


def test_help_lists_every_slot(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("info", "demo", "train", "evaluate", "profile", "export", "bench", "data"):
        assert f"    {name}" in out, name


def test_info_reports_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "backends:" in out
    assert "reference  available" in out
    # CUDA either runs here or says why not
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("cuda "))
    assert "available" in line


@pytest.mark.parametrize("env, says", [("1", "set at the first fused CPU call"),
                                       ("0", "left as it is (SPIKING_TUNE_MALLOC=0)")])
def test_info_reports_the_allocator_plan(env, says, capsys, monkeypatch):
    from spiking.kernels.cpu import _glibc_mallopt

    if env == "1" and _glibc_mallopt() is None:
        says = "left as it is (not glibc)"
    monkeypatch.setenv("SPIKING_TUNE_MALLOC", env)
    for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(k, raising=False)
    assert cli.main(["info"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("cpu allocator:"))
    assert says in line


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "spiking.cli", "info"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "spiking" in r.stdout


def test_bench_unknown_suite_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "nothing"])
    assert e.value.code == 2
