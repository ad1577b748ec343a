"""A short Markdown report of a finished run (report.md in the run folder)."""

from __future__ import annotations

from pathlib import Path


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def write_report(run_dir, summary: dict, history: list[dict]) -> Path:
    run_dir = Path(run_dir)
    cfg = summary["config"]
    spk = summary.get("test_spikes_per_sample")
    n_val = summary.get("n_val", 0)
    lines = [
        f"# {summary['model']} on {summary['dataset']}",
        "",
        (f"Data: {summary['data']}; {summary['n_train']} training"
        f"{f', {n_val} validation (held out of the training split)' if n_val else ''} and "
        f"{summary['n_test']} test samples, {cfg['n_time_bins']} time bins."),
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {_pct(summary['test_accuracy'])} |",
        f"| best test accuracy (any epoch) | {_pct(summary['best_test_accuracy'])} |",
    ]
    if n_val:
        lines += [
            f"| validation accuracy (last epoch) | {_pct(summary.get('val_accuracy'))} |",
            (f"| best validation accuracy (epoch {summary.get('best_val_epoch')}) | "
             f"{_pct(summary.get('best_val_accuracy'))}, test then "
             f"{_pct(summary.get('test_accuracy_at_best_val'))} |"),
        ]
    lines += [
        f"| train accuracy (last epoch) | {_pct(summary['train_accuracy'])} |",
        f"| test loss | {summary['test_loss']:.4f} |",
        f"| spikes per test sample | {'n/a' if spk is None else f'{spk:.0f}'} |",
        f"| parameters | {summary['parameters']:,} |",
        (f"| training time | {summary['train_time_s'] or 0:.1f} s on {summary['device']} "
        f"({summary['world_size']} process(es)) |"),
        "",
        (f"Recipe: AdamW lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g} "
        f"(none on learnable time constants), "
        f"{cfg['schedule']} schedule, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
        f"gradient clipping {cfg['grad_clip']:g}, seed {cfg['seed']}; model options "
        f"`{cfg['model_args']}`."),
        "",
        "## Per epoch",
        "",
        (f"| epoch | train loss | train acc |{' val acc |' if n_val else ''} test loss | "
         "test acc | spikes/sample | s |"),
        "|---|---|---|" + ("---|" if n_val else "") + "---|---|---|---|",
    ]
    for h in history:
        tl = h.get("test_loss")
        ts = h.get("test_spikes_per_sample")
        va = f" {_pct(h.get('val_accuracy'))} |" if n_val else ""
        lines.append(
            f"| {h['epoch']} | {h['train_loss']:.4f} | {_pct(h['train_accuracy'])} |{va} "
            f"{'' if tl is None else f'{tl:.4f}'} | {_pct(h.get('test_accuracy'))} | "
            f"{'' if ts is None else f'{ts:.0f}'} | {h['epoch_time_s']:.1f} |")
    figs = [f for f in ("curves.png", "confusion.png", "raster.png", "delays.png")
            if (run_dir / f).exists()]
    if figs:
        lines += ["", "## Figures", ""] + [f"![{f[:-4]}]({f})" for f in figs]
    lines += ["", f"Versions: {summary['versions']}.", ""]
    from spiking.training.checkpoint import atomic_write_text

    return atomic_write_text(run_dir / "report.md", "\n".join(lines))
