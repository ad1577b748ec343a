"""torchrun with 2 gloo processes on CPU == one process with the same global batch."""

import json
import sys

import pytest
import torch
import torch.distributed as dist
from training_helpers import nmnist_root, run, tiny_args  # noqa: F401

from spiking.training import checkpoint as ckpt


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_gloo_matches_single_process(tmp_path, nmnist_root):  # noqa: F811
    flags = {"epochs": 2, "batch-size": 16}
    run([sys.executable, "-m", "spiking", "train",
         *tiny_args(nmnist_root, tmp_path, "single", **flags)])
    res = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "spiking", "train",
               *tiny_args(nmnist_root, tmp_path, "ddp", **flags)])
    assert res.stdout.count("test accuracy") == 1  # the summary line comes from rank 0 only
    one, two = ckpt.load(tmp_path / "single"), ckpt.load(tmp_path / "ddp")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["ddp_rank_param_max_abs_diff"] == 0.0  # both ranks hold identical weights
    for k, v in one["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, k=k: f"{k}: {m}")
    for a, b in zip(one["metrics"], two["metrics"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-9)
        assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=1e-9)
    # the runs trained: the loss curve moved
    assert one["metrics"][0]["train_loss"] != one["metrics"][-1]["train_loss"]


class _Exited(Exception):
    pass


def _fake_exit(codes):
    def exit_(code):
        codes.append(code)
        raise _Exited  # stands in for os._exit, which would end the test process
    return exit_


def test_worker_that_joined_a_group_skips_interpreter_shutdown(monkeypatch, capsys):
    """A torchrun worker leaves through os._exit with main()'s code, after its output."""
    from spiking import cli
    from spiking.training import distributed as D

    codes = []
    monkeypatch.setattr(D.os, "_exit", _fake_exit(codes))
    assert cli.main(["info"]) == 0 and codes == []  # never joined: an ordinary return
    monkeypatch.setattr(D, "_joined", True)
    with pytest.raises(_Exited):
        cli.main(["info"])
    assert codes == [0]
    assert "torch" in capsys.readouterr().out  # `info` printed before the exit

    def boom(args):
        raise RuntimeError("worker failed")
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_running(boom))
    with pytest.raises(_Exited):
        cli.main([])
    assert codes == [0, 1]
    assert "RuntimeError: worker failed" in capsys.readouterr().err


def _parser_running(fn):
    import argparse

    p = argparse.ArgumentParser()
    p.set_defaults(func=fn)
    return p
