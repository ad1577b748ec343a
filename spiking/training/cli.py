"""``spiking train``, ``spiking evaluate`` and ``spiking demo`` (wired by :mod:`spiking.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from spiking.training.config import AMP_MODES, DATASETS, DEVICES, SCHEDULES

# flag -> (type, help); None type means a boolean switch
_FLAGS = {
    "epochs": (int, "training epochs"),
    "batch_size": (int, "global batch size (split over torchrun processes)"),
    "lr": (float, "peak learning rate of AdamW"),
    "weight_decay": (float, "AdamW weight decay (not applied to learnable time constants)"),
    "schedule": (str, f"learning-rate schedule: {', '.join(SCHEDULES)}"),
    "grad_clip": (float, "max gradient norm (0: no clipping)"),
    "label_smoothing": (float, "cross-entropy label smoothing in [0, 1) (default 0)"),
    "n_time_bins": (int, "time bins per sample"),
    "augment_shift": (int, "random translation: camera frames by N pixels, audio by N channels"),
    "augment_dilate": (float, "random time stretch of each training sample by a factor in "
                              "[1 - D, 1 + D] (log-uniform; default 0: off)"),
    "augment_blend": (float, "share P of training samples blended with a random sample of "
                             "their class (time-aligned, half of each one's spikes; default 0)"),
    "max_train_samples": (int, "use a class-balanced subset of the training set"),
    "max_test_samples": (int, "use a class-balanced subset of the test set"),
    "val_fraction": (float, "hold out this share of the training set (per class, seeded) as a "
                            "validation split, evaluated every epoch (default 0: none)"),
    "seed": (int, "random seed"),
    "amp": (str, f"mixed precision on CUDA: {', '.join(AMP_MODES)}"),
    "device": (str, f"{', '.join(DEVICES)}"),
    "out_dir": (str, "folder holding run folders (default runs)"),
    "run_name": (str, "run folder name (default MODEL-DATASET-TIMESTAMP)"),
    "cache_dir": (str, "binned-frame cache folder"),
}


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _run(fn) -> int:
    from spiking.datasets import DatasetNotFoundError

    try:
        return fn()
    except (ValueError, TypeError, FileNotFoundError, DatasetNotFoundError) as e:
        if os.environ.get("SPIKING_DEBUG"):
            raise
        return _error(str(e))


def cmd_train(args) -> int:
    from spiking.training import config as C
    from spiking.training.loop import train

    def go():
        if args.resume:
            given = [f"--{k.replace('_', '-')}" for k in _FLAGS if getattr(args, k) is not None]
            given += [f for f, v in (("--model", args.model), ("--dataset", args.dataset),
                                     ("--config", args.config), ("--data-root", args.data_root),
                                     ("--model-args", args.model_args)) if v]
            if given:
                raise ValueError(
                    f"--resume continues {args.resume} with its stored configuration; "
                    f"{', '.join(given)} would be ignored (changing a run mid-way, e.g. more "
                    f"epochs, would not match its learning-rate schedule): start a new run "
                    f"instead, or drop those flags")
            summary = train(resume=args.resume)
        else:
            over = {k: getattr(args, k) for k in _FLAGS}
            over.update(model=args.model, dataset=args.dataset, data_root=args.data_root)
            if args.deterministic:
                over["deterministic"] = True
            if args.no_progress:
                over["progress"] = False
            if args.no_plots:
                over["plots"] = False
            if args.model_args:
                over["model_args"] = json.loads(args.model_args)
            summary = train(C.build(args.config, over))
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns it
            _print_summary(summary)
        return 0
    return _run(go)


def _print_summary(s: dict) -> None:
    spk = s.get("test_spikes_per_sample")
    print(f"test accuracy {100 * s['test_accuracy']:.2f} % ({s['n_test']} samples), "
          f"test loss {s['test_loss']:.4f}"
          f"{'' if spk is None else f', {spk:.0f} spikes/sample'}, "
          f"training {s['train_time_s'] or 0:.1f} s")


def cmd_evaluate(args) -> int:
    def go():
        res = evaluate_checkpoint(args.checkpoint, data_root=args.data_root,
                                  device=args.device)
        out = {k: v for k, v in res.items() if k not in ("confusion", "first")}
        out["confusion"] = res["confusion"].tolist()
        print(json.dumps(out, indent=2) if args.json else
              f"{res['model']} on {res['dataset']}: test accuracy "
              f"{100 * res['accuracy']:.2f} % ({res['n_test']} samples), loss "
              f"{res['loss']:.4f}"
              + ("" if res["spikes_per_sample"] is None
                 else f", {res['spikes_per_sample']:.0f} spikes/sample")
              + ("" if "accuracy_vs_fraction" not in res else
                 "\naccuracy after " + ", ".join(
                     f"{k} of the sequence: {100 * a:.1f} %"
                     for k, a in res["accuracy_vs_fraction"].items())))
        return 0
    return _run(go)


def load_checkpoint_model(path, data_root=None, device: str = "auto"):
    """Rebuild the model of a checkpoint with its weights and its dataset's test split.

    Returns ``(model, cfg, data, info, state)``; the model is in eval mode on ``info.device``.
    """
    from spiking.training import checkpoint as ckpt
    from spiking.training import data as data_mod
    from spiking.training import distributed as D
    from spiking.training.config import Config
    from spiking.training.loop import build_model

    state = ckpt.load(path)
    cfg = Config.from_dict(state["config"])
    if data_root is not None:
        cfg.data_root = str(data_root)
    cfg.device = device
    cfg.validate()
    info = D.DistInfo(device=D.pick_device(device))
    data = data_mod.load(cfg, train=False)
    model = build_model(cfg, data).to(info.device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, data, info, state


def evaluate_checkpoint(path, data_root=None, device: str = "auto") -> dict:
    """Rebuild the model of a checkpoint and evaluate it on its dataset's test split."""
    from spiking.training import checkpoint as ckpt
    from spiking.training.loop import amp_setup, evaluate

    model, cfg, data, info, state = load_checkpoint_model(path, data_root, device)
    res = evaluate(model, data.test, info, cfg, data.n_classes, amp_setup(cfg, info.device)[0])
    res.update(model=cfg.model, dataset=cfg.dataset, n_test=len(data.test),
               epoch=state["epoch"], checkpoint=str(ckpt.resolve(path)))
    if _streams(model):
        res["accuracy_vs_fraction"] = streaming_accuracy(model, data.test, info.device,
                                                         cfg.batch_size)
    return res


def _streams(model) -> bool:
    """Whether the model gives a prediction at every step (``forward(x, all_steps=True)``)."""
    import inspect

    return "all_steps" in inspect.signature(model.forward).parameters


def streaming_accuracy(model, split, device, batch_size: int) -> dict:
    """Test accuracy from the prediction after each fraction of the sequence has been seen
    (:func:`~spiking.models.lmuformer.accuracy_vs_fraction`'s fractions), keys as ``"25%"``."""
    import numpy as np

    from spiking.models.lmuformer import accuracy_vs_fraction

    n = len(split)
    loader = (split.batch(np.arange(i, min(i + batch_size, n)), device)
              for i in range(0, n, batch_size))
    acc = accuracy_vs_fraction(model, loader)
    return {f"{round(100 * f)}%": a for f, a in acc.items()}


# Sum pooling (not the recipe's max pooling) keeps the demo's CSNN exportable: its
# `to_sequential()` stack is written as NIR and mapped SpiNNaker-like into a weight map.
DEMO = {"model": "csnn", "dataset": "digits", "epochs": 4, "batch_size": 32, "lr": 5e-3,
        "n_time_bins": 8, "augment_shift": 1,
        "model_args": {"channels": [8, 16], "tau_mem": 60e-3, "dropout": 0.1,
                       "pool_kind": "sum"}}


def cmd_demo(args) -> int:
    from spiking.training import config as C
    from spiking.training.loop import train

    def go():
        t0 = time.perf_counter()
        name = args.run_name or f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        over = dict(DEMO, out_dir=args.out_dir, run_name=name, data_root=args.data_root,
                    progress=not args.no_progress)
        if args.epochs:
            over["epochs"] = args.epochs
        cfg = C.build(None, over)
        summary = train(cfg)
        run_dir = Path(cfg.out_dir) / name
        ev = evaluate_checkpoint(run_dir, data_root=args.data_root, device=cfg.device)
        _print_summary(summary)
        print(f"re-evaluated from {run_dir / 'checkpoint.pt'}: test accuracy "
              f"{100 * ev['accuracy']:.2f} %")
        hw = _hardware_section(run_dir, args.data_root, cfg.device)
        if hw:
            print("\n" + hw + "\n")
        print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: "
              f"{run_dir / 'report.md'}")
        return 0
    return _run(go)


def _hardware_section(run_dir: Path, data_root, device: str, n_samples: int = 8) -> str:
    """The demo's hardware estimate of the trained model on `n_samples` test digits, appended
    to the run's report.md (and a NIR export next to it); '' with a warning if it fails."""
    import torch

    from spiking.hardware.report import demo_section
    from spiking.training.checkpoint import atomic_write_text

    try:
        model, _, data, info, _ = load_checkpoint_model(run_dir, data_root, device)
        batch = data.test.batch(list(range(min(n_samples, len(data.test)))), info.device)
        with torch.no_grad():
            text = demo_section(model, batch, out_dir=run_dir)
    except (ImportError, RuntimeError, TypeError, ValueError) as e:
        print(f"warning: hardware estimate skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return ""
    report = run_dir / "report.md"
    old = report.read_text() if report.exists() else ""
    atomic_write_text(report, old.rstrip("\n") + "\n\n" + text + "\n")
    return text


def add_parsers(sub) -> None:
    """Add ``train``, ``evaluate`` and ``demo`` to the ``spiking`` command's subparsers."""
    from spiking.models.registry import available_models

    p = sub.add_parser("train", help="train a model (single process or under torchrun)",
                       description="Train a model. Precedence: model recipe (with its "
                                   "dataset-specific part, if any) < --config file < flags. "
                                   "Under torchrun this runs DistributedDataParallel.")
    p.add_argument("--model", help=f"model name ({', '.join(available_models())}); "
                                   "default csnn")
    p.add_argument("--dataset", choices=DATASETS, help="dataset (default nmnist)")
    p.add_argument("--data-root", help="folder holding the dataset (see `spiking data`)")
    p.add_argument("--config", help="TOML (or YAML) file with config keys")
    p.add_argument("--model-args", help='JSON object of model options, e.g. \'{"dropout": 0}\'')
    for key, (typ, help_) in _FLAGS.items():
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=typ, help=help_)
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plots", action="store_true", help="skip the plots")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder/checkpoint RUN "
                                                   "with its stored configuration")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its dataset's test split")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--data-root", help="dataset folder (default: the one used in training)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="train and evaluate a small CSNN on the embedded digits "
                                    "(minutes on a laptop CPU), write a run folder and report")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--run-name")
    p.add_argument("--data-root", help="where to build the embedded dataset (default: cache)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def main(argv=None) -> int:  # pragma: no cover - convenience entry for this module alone
    parser = argparse.ArgumentParser(prog="spiking")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)
