"""Configuration: precedence (recipe < file < flags), validation, clear CLI errors."""

import numpy as np
import pytest
import torch

from spiking.cli import main
from spiking.training import config as C


def test_recipe_then_file_then_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('model = "csnn"\nepochs = 7\nlr = 1e-3\n[model_args]\ndropout = 0.5\n')
    cfg = C.build(f, {"lr": 2e-3, "epochs": None})
    recipe = C.recipe("csnn")
    assert cfg.epochs == 7 and cfg.lr == 2e-3
    assert cfg.model_args["dropout"] == 0.5
    assert cfg.model_args["channels"] == recipe["model_args"]["channels"]
    assert cfg.n_time_bins == recipe["n_time_bins"]


@pytest.mark.parametrize("schedule", C.SCHEDULES)
@pytest.mark.parametrize("warmup", [0.0, 0.25, 0.99])
@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 12])
def test_schedules_run_for_any_number_of_steps(schedule, warmup, total):
    """A run of very few optimiser steps (tiny data, one epoch) must not crash the schedule
    (torch's OneCycleLR divides by its warm-up length in steps)."""
    from spiking.training.loop import make_scheduler

    cfg = C.Config(lr=0.01, schedule=schedule, warmup_frac=warmup)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(cfg, opt, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0.0 <= lr <= cfg.lr * (1 + 1e-9) for lr in lrs), lrs
    if schedule == "onecycle" and total >= 3:
        assert max(lrs) > lrs[0] and max(lrs) > lrs[-1]   # a warm-up, then the decay


@pytest.mark.parametrize("over, match", [
    ({"model": "nosuchnet"}, "unknown model 'nosuchnet'; available: .*csnn"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({"lr": -1.0}, r"lr=-1.0 is invalid: expected a finite learning rate > 0"),
    ({"epochs": 0}, "epochs=0 is invalid"),
    ({"schedule": "step"}, "schedule='step' is invalid"),
    ({"grad_clip": -1}, "grad_clip=-1 is invalid"),
    ({"val_fraction": 1.0}, r"val_fraction=1.0 is invalid: expected a number in \[0, 1\)"),
])
def test_bad_values_are_named(over, match):
    with pytest.raises(ValueError, match=match):
        C.build(None, over)


def test_unknown_key_and_missing_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("epoch = 3\n")
    with pytest.raises(ValueError, match=r"unknown config keys \['epoch'\]"):
        C.build(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.build(tmp_path / "absent.toml")
    with pytest.raises(ValueError, match=r"must end in \.toml"):
        (tmp_path / "c.json").write_text("{}")
        C.build(tmp_path / "c.json")


def test_cli_reports_bad_config_and_missing_dataset(tmp_path, capsys):
    assert main(["train", "--model", "nosuchnet"]) == 2
    assert "unknown model 'nosuchnet'" in capsys.readouterr().err
    assert main(["train", "--lr", "-0.1"]) == 2
    assert "lr=-0.1 is invalid" in capsys.readouterr().err
    rc = main(["train", "--dataset", "nmnist", "--data-root", str(tmp_path / "empty"),
               "--out-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "NMNIST" in err and str(tmp_path / "empty") in err
    assert main(["evaluate", str(tmp_path / "no-run")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m_spiking_lists_training_commands():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "spiking", "--help"], check=False,
                         capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0
    for name in ("train", "evaluate", "demo"):
        assert name in res.stdout


def test_random_shift_audio_channels_and_frames():
    from spiking.training.data import random_shift

    torch.manual_seed(0)
    x = torch.zeros(64, 3, 20)
    x[:, :, 10] = 1.0  # one active channel per sample
    y = random_shift(x, 2)
    assert y.shape == x.shape
    pos = y.argmax(-1)  # [B, T]: every step of a sample moves by the same offset
    assert torch.equal(pos, pos[:, :1].expand_as(pos))
    offs = set((pos[:, 0] - 10).tolist())
    assert offs <= {-2, -1, 0, 1, 2} and len(offs) > 1
    assert torch.equal(y.sum((1, 2)), x.sum((1, 2)))  # nothing pushed out at shift 2
    frames = torch.rand(4, 2, 2, 8, 8)
    assert random_shift(frames, 1).shape == frames.shape
    with pytest.raises(ValueError, match="audio spikes"):
        random_shift(torch.zeros(2, 3, 4, 5), 1)


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--epochs", "40", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "--lr" in err and "stored configuration" in err


@pytest.mark.parametrize("name", sorted(C.RECIPES))
def test_every_documented_recipe_is_a_valid_config_and_builds_its_model(name):
    from spiking.models.registry import get_model

    r = C.recipe(name)
    assert r, f"{name} has no RECIPE"
    cfg = C.Config.from_dict({"model": name, **r})        # unknown keys would raise
    shape = (2, 34, 34) if name == "csnn" else (700,)
    m = get_model(name, input_shape=shape, n_classes=10, **cfg.model_args)
    x = torch.zeros(3, 2, *shape)
    out = m(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 10)


def test_validation_indices_are_stratified_seeded_and_never_empty():
    from spiking.training.data import validation_indices

    y = np.array([0] * 40 + [1] * 20 + [2] * 3 + [3])
    a = validation_indices(y, 0.25, seed=1)
    assert [int((y[a] == c).sum()) for c in range(4)] == [10, 5, 1, 0]  # a lone sample stays
    assert len(np.unique(a)) == len(a) and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, validation_indices(y, 0.25, seed=1))
    assert not np.array_equal(a, validation_indices(y, 0.25, seed=2))
    assert len(validation_indices(y, 0.0, seed=1)) == 0


def test_dataset_recipe_merges_over_the_model_recipe(tmp_path):
    from spiking.models import egru

    base = C.recipe("egru")
    audio = C.recipe("egru", "fsdd-shd")
    want = egru.DATASET_RECIPES[("egru", "fsdd-shd")]
    assert audio["n_time_bins"] == want["n_time_bins"] != base["n_time_bins"]
    assert audio["model_args"]["input_pool"] == want["model_args"]["input_pool"]
    assert audio["weight_decay"] == base["weight_decay"]        # kept from RECIPE
    assert C.recipe("egru", "digits") == base                    # no entry: the plain recipe
    cfg = C.build(None, {"model": "egru", "dataset": "fsdd-shd", "lr": 1e-4})
    assert cfg.lr == 1e-4 and cfg.n_time_bins == want["n_time_bins"]   # flags still win
    assert cfg.model_args["readout_reduce"] == "max"
    f = tmp_path / "c.toml"
    f.write_text('model = "egru"\ndataset = "fsdd-shd"\n[model_args]\ndropout = 0.5\n')
    cfg = C.build(f, {})
    assert cfg.model_args["dropout"] == 0.5 and cfg.model_args["input_pool"] == 5
    assert C.build(None, {"model": "egru", "dataset": "nmnist"}).augment_shift == 2


@pytest.mark.parametrize("model,dataset", [
    (m, d) for name in sorted(set(C.RECIPES.values()))
    for (m, d) in getattr(__import__(name, fromlist=["_"]), "DATASET_RECIPES", {})])
def test_every_dataset_recipe_is_a_valid_config_and_builds_its_model(model, dataset):
    from spiking.models.registry import get_model

    cfg = C.Config.from_dict({"model": model, "dataset": dataset, **C.recipe(model, dataset)})
    cfg.validate()
    shape = (2, 34, 34) if dataset == "nmnist" else (700,)
    m = get_model(model, input_shape=shape, n_classes=10, **cfg.model_args)
    assert m(torch.zeros(3, 2, *shape))[0].shape == (2, 10)


def _capture_train(monkeypatch) -> dict:
    """Replace the training loop by a stub that records the Config the CLI built."""
    import spiking.training.loop as L

    seen = {}

    def fake_train(cfg=None, resume=None):
        seen["cfg"] = cfg
        return {"test_accuracy": 0.5, "n_test": 1, "test_loss": 1.0, "train_time_s": 0.0}

    monkeypatch.setattr(L, "train", fake_train)
    return seen


def test_label_smoothing_flag_reaches_the_config_and_is_checked(monkeypatch, capsys):
    seen = _capture_train(monkeypatch)
    assert main(["train", "--model", "cfc", "--dataset", "fsdd-shd",
                 "--label-smoothing", "0.05"]) == 0
    assert seen["cfg"].label_smoothing == 0.05                     # the flag over the recipe
    assert main(["train", "--model", "cfc", "--label-smoothing", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "label_smoothing=1.5" in err and "[0, 1)" in err


def test_random_dilate_moves_spikes_in_time_and_keeps_counts():
    from spiking.training.data import random_dilate

    torch.manual_seed(0)
    x = torch.zeros(400, 50, 3)
    x[:, 20, 1] = 2.0                    # one bin of two spikes, centre 20.5
    x[:, 3, 0] = 1.0
    y = random_dilate(x, 0.1)
    assert torch.equal(y.sum((1, 2)), x.sum((1, 2)))   # nothing reaches the end: counts kept
    pos = y[:, :, 1].argmax(1)
    assert set(pos.tolist()) <= set(range(18, 23))     # floor(f * 20.5), f in [0.9, 1.1]
    assert pos.min() < 20 < pos.max()                  # compressed and stretched samples
    assert torch.equal(y[:, :, 2], x[:, :, 2])         # channels stay apart
    assert torch.equal(random_dilate(x, 0.0), x)       # factor 1: identity
    late = torch.zeros(200, 10, 2)
    late[:, 9, 0] = 1.0                                 # the last bin: stretched ones drop out
    out = random_dilate(late, 0.3)
    assert 0 < out.sum() < late.sum()
    frames = torch.rand(4, 6, 2, 5, 5)
    assert random_dilate(frames, 0.2).shape == frames.shape
    with pytest.raises(ValueError, match="augment_dilate"):
        random_dilate(x, 1.0)
    with pytest.raises(ValueError, match="augment_dilate=-0.1"):
        C.Config(augment_dilate=-0.1).validate()


def test_random_blend_mixes_time_aligned_samples_of_the_same_class():
    from spiking.training.data import Split, _time_centre, random_blend

    torch.manual_seed(0)
    n, t = 40, 30
    x = torch.zeros(n, t, 4)
    y = torch.arange(n) % 2
    for i in range(n):                  # class c fires on channel c (+ channel 2 or 3 by
        start = 2 + (i * 7) % 20        # sample parity of i // 2) at a sample's own time
        x[i, start:start + 4, int(y[i])] = 3.0
        x[i, start + 1, 2 + (i // 2) % 2] = 2.0
    pool = Split(x.to(torch.uint8), y)
    out = random_blend(x, y, pool, 1.0)
    assert out.shape == x.shape and torch.equal(out, out.round()) and out.min() >= 0
    for c in (0, 1):                    # the partner is of the same class: no spike of the
        assert out[y == c, :, 1 - c].sum() == 0                       # other class's channel
    assert (out[:, :, 2] > 0).any(1).sum() > 0 and (out[:, :, 3] > 0).any(1).sum() > 0
    mixed = ((out[:, :, 2] > 0).any(1) & (out[:, :, 3] > 0).any(1)).sum()
    assert mixed > 0                    # spikes of two different samples in one
    # time-aligned: the blend's spikes stay within the original's 4-bin support (+- 1 bin
    # for centres that round) and its centre of mass stays put
    support = (x.sum(2) > 0)
    near = support | torch.roll(support, 1, 1) | torch.roll(support, -1, 1)
    assert out.sum(2)[~near].sum() == 0
    assert torch.allclose(_time_centre(out), _time_centre(x), atol=1.0)
    # binomial halves of both: on average the spike count of one sample
    ratio = out.sum() / x.sum()
    assert 0.9 < ratio < 1.1, ratio
    assert torch.equal(random_blend(x, y, pool, 0.0), x)
    some = random_blend(x, y, pool, 0.5)
    changed = (some != x).flatten(1).any(1).sum()
    assert 5 < changed < 35, changed
    with pytest.raises(ValueError, match="augment_blend"):
        random_blend(x, y, pool, 1.5)
    with pytest.raises(ValueError, match="augment_blend=2"):
        C.Config(augment_blend=2).validate()


def test_augment_blend_flag_reaches_the_batches(monkeypatch, capsys):
    from spiking.training.data import Split

    seen = _capture_train(monkeypatch)
    assert main(["train", "--model", "egru", "--dataset", "fsdd-shd",
                 "--augment-blend", "0.25"]) == 0
    assert seen["cfg"].augment_blend == 0.25
    assert main(["train", "--model", "egru", "--augment-blend", "-1"]) == 2
    assert "augment_blend=-1" in capsys.readouterr().err
    torch.manual_seed(1)
    x = (torch.rand(8, 12, 5) < 0.3).to(torch.uint8) * 3
    split = Split(x, torch.tensor([0, 1] * 4))
    plain, _ = split.batch(range(8), "cpu")
    mixed, y = split.batch(range(8), "cpu", augment_blend=1.0)
    assert plain.shape == mixed.shape == (12, 8, 5) and torch.equal(y, split.y)
    assert torch.equal(plain, x.transpose(0, 1).float()) and not torch.equal(mixed, plain)


def test_fsdd_shd_from_a_data_folder_converts_into_the_cache_not_the_folder(tmp_path,
                                                                           monkeypatch):
    # `--data-root ../shared/data` (which holds fsdd/) must not get an SHD/ folder written
    import spiking.datasets as D
    from spiking.datasets import audio
    from spiking.training import data as TD

    root = tmp_path / "data"
    (root / "fsdd" / "recordings").mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(audio, "build_fsdd_shd", lambda src=None, out=None, **kw:
                        calls.append((src, out)))
    monkeypatch.setattr(D, "SHD", lambda r, train: (r, train))
    cfg = C.Config.from_dict({"model": "rsnn", "dataset": "fsdd-shd", "data_root": str(root)})
    train, test, _ = TD._readers(cfg)
    cache = tmp_path / "cache" / "spiking" / "fsdd-shd"
    assert calls == [(root / "fsdd", cache)] and train == (cache, True)
    assert sorted(p.name for p in root.iterdir()) == ["fsdd"]
    # a folder without recordings is the output folder the user chose, as before
    out = tmp_path / "out"
    calls.clear()
    cfg = C.Config.from_dict({"model": "rsnn", "dataset": "fsdd-shd", "data_root": str(out)})
    TD._readers(cfg)
    assert calls == [(None, out)]
