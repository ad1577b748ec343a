"""Short training on genuine N-MNIST recordings: the loss falls and accuracy beats chance."""

import json

import pytest
from training_helpers import nmnist_root, tiny_args  # noqa: F401

from spiking.cli import main
from spiking.training.metrics import read_jsonl


def test_short_run_learns_and_writes_run_folder(tmp_path, nmnist_root, capsys):  # noqa: F811
    args = tiny_args(nmnist_root, tmp_path, "short", epochs=4, lr=1e-2,
                     **{"max-train-samples": 200, "max-test-samples": 100,
                        "n-time-bins": 6})
    args.remove("--no-plots")
    assert main(["train", *args]) == 0
    run = tmp_path / "short"
    hist = read_jsonl(run / "metrics.jsonl")
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < 0.75 * hist[0]["train_loss"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_test"] == 100
    assert summary["test_accuracy"] >= 0.4          # chance is 0.1 (10 classes)
    assert summary["test_spikes_per_sample"] > 0
    for f in ("curves.png", "confusion.png", "raster.png", "report.md", "checkpoint.pt"):
        assert (run / f).stat().st_size > 0, f
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accuracy"] == summary["test_accuracy"]
    assert sum(map(sum, res["confusion"])) == 100


def test_evaluate_reports_streaming_accuracy(tmp_path, nmnist_root, capsys):  # noqa: F811
    """LMUFormer predicts at every step: `spiking evaluate` adds accuracy vs the fraction of the
    sequence seen, whose 100 % entry is the ordinary accuracy; a CSNN run has no such entry."""
    args = tiny_args(nmnist_root, tmp_path, "lmu", epochs=2, lr=3e-3, **{
        "model": "lmuformer", "n-time-bins": 8, "max-train-samples": 64,
        "max-test-samples": 24,
        "model-args": '{"dim": 16, "order": 4, "theta": 8.0, "spatial_pool": 2}'})
    assert main(["train", *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "lmu"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    frac = res["accuracy_vs_fraction"]
    assert list(frac) == ["25%", "50%", "75%", "100%"]
    assert frac["100%"] == res["accuracy"]
    assert all(0.0 <= a <= 1.0 for a in frac.values())
    assert main(["evaluate", str(tmp_path / "lmu")]) == 0
    assert "accuracy after 25% of the sequence" in capsys.readouterr().out
    assert main(["train", *tiny_args(nmnist_root, tmp_path, "csnn", epochs=1)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "csnn"), "--json"]) == 0
    assert "accuracy_vs_fraction" not in json.loads(capsys.readouterr().out)


def test_validation_split_is_held_out_and_reported(tmp_path, nmnist_root, capsys):  # noqa: F811
    """``--val-fraction`` takes a per-class share of the training samples out of training,
    evaluates it every epoch and names the epoch it would pick (and the test accuracy then)."""
    args = tiny_args(nmnist_root, tmp_path, "val", epochs=2, **{"val-fraction": 0.25})
    assert main(["train", *args]) == 0
    # the 64-sample slice has 4 classes of 7 and 6 of 6: a quarter of each, rounded, is 2
    assert "46 train / 18 validation / 20 test" in capsys.readouterr().out
    run = tmp_path / "val"
    hist = read_jsonl(run / "metrics.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (46, 18, 20)
    assert all(0.0 <= h["val_accuracy"] <= 1.0 and h["val_loss"] > 0 for h in hist)
    pick = max(hist, key=lambda h: h["val_accuracy"])
    assert summary["best_val_epoch"] == pick["epoch"]
    assert summary["test_accuracy_at_best_val"] == pick["test_accuracy"]
    assert summary["val_accuracy"] == hist[-1]["val_accuracy"]
    assert "best validation accuracy (epoch" in (run / "report.md").read_text()
    # the same seed holds out the same samples: a rerun gives the same validation curve
    assert main(["train", *tiny_args(nmnist_root, tmp_path, "val2", epochs=2,
                                     **{"val-fraction": 0.25})]) == 0
    assert [h["val_loss"] for h in read_jsonl(tmp_path / "val2" / "metrics.jsonl")] == \
        [h["val_loss"] for h in hist]


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_learnt_delay_positions_get_their_schedule_lr_and_no_decay(tmp_path, nmnist_root,  # noqa: F811
                                                                   monkeypatch, schedule):
    # a model with LearntDelays: the loop calls set_progress every epoch (sigma shrinks, then
    # hard from half the epochs) and trains the positions at 150 x the lr without decay
    from spiking.models.delays import POS_LR_SCALE, LearntDelays
    from spiking.training import checkpoint as ckpt
    from spiking.training import loop

    calls = []

    class Logged(LearntDelays):
        def set_progress(self, epoch, epochs):
            calls.append((epoch, epochs))
            super().set_progress(epoch, epochs)
    orig = loop.build_model

    def build(cfg, data):
        m = orig(cfg, data)
        m.extra_delays = Logged(2, 2, 4, 1)          # a passenger: not in the forward pass
        m.slow_delays = LearntDelays(2, 2, 4, 1, pos_lr_scale=20)   # its own position lr
        return m
    monkeypatch.setattr(loop, "build_model", build)
    assert main(["train", *tiny_args(nmnist_root, tmp_path, "ld", schedule=schedule,
                                     **{"weight-decay": 0.1})]) == 0
    assert calls == [(0, 3), (1, 3), (2, 3)]
    state = ckpt.load(tmp_path / "ld" / ckpt.FILENAME)
    assert float(state["model"]["extra_delays.sigma"]) == 0.0      # hard at epoch 2 of 3
    groups = state["optimizer"]["param_groups"]
    pos = [g for g in groups if g.get("lr_scale")]
    assert [g["lr_scale"] for g in pos] == [POS_LR_SCALE, 20]
    assert [len(g["params"]) for g in pos] == [1, 1]
    assert all(g["weight_decay"] == 0.0 for g in pos) and groups[0]["weight_decay"] == 0.1
    for key in ("initial_lr", "lr"):          # the schedule scales every group alike
        for g in pos:
            assert g[key] == pytest.approx(g["lr_scale"] * groups[0][key], rel=1e-9, abs=1e-15)
    assert groups[0]["initial_lr"] > 0
