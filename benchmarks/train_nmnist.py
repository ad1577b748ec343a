"""Time-to-accuracy on N-MNIST: our CSNN recipe vs the snnTorch tutorial-7 CSNN, side by side.

Both read the same recordings (``--data-root``, default ``$SPIKING_DATA/nmnist-subset``: the
1,000-train / 100-test genuine subset) through the same binning (:class:`BinnedDataset`,
tonic ``ToFrame`` semantics, ``n_time_bins`` per recording). Each side trains epoch by epoch,
evaluates the full test split after every epoch, and reports the cumulative *training* time
(evaluation excluded) at which test accuracy first reaches ``--target`` (default 95 %).

snnTorch side (tutorial 7, "Training on N-MNIST with convolutions", Eshraghian et al.): 30 time
bins, ``12C5-MP2-64C5-MP2-FC10`` with ``snn.Leaky(beta=0.5)`` and a fast-sigmoid surrogate
(slope 75), Adam lr 2e-3, batch 64, ``mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)``,
accuracy from output spike counts. Our side: ``spiking train --model csnn`` with its recipe
(:data:`spiking.models.csnn.RECIPE`), through :func:`spiking.training.loop.train`.

    python benchmarks/train_nmnist.py [--seeds 0 1 2] [--max-epochs-snntorch 40]

Prints a Markdown table; timings depend on the machine's load (record it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def default_root() -> Path:
    return Path(os.environ.get("SPIKING_DATA", REPO.parent / "shared" / "data")) / "nmnist-subset"


def load(root, n_bins: int):
    from spiking.datasets import NMNIST, BinnedDataset, cache_dir

    out = []
    for train in (True, False):
        ds = BinnedDataset(NMNIST(root, train=train), n_time_bins=n_bins,
                           cache_dir=cache_dir() / "binned")
        xs, ys = zip(*[ds[i] for i in range(len(ds))])
        out.append((torch.stack(xs), torch.tensor(ys)))
    return out


def snntorch_run(root, seed: int, max_epochs: int, target: float, n_bins: int = 30):
    import snntorch as snn
    from snntorch import functional as SF
    from snntorch import surrogate

    (x_tr, y_tr), (x_te, y_te) = load(root, n_bins)
    torch.manual_seed(seed)
    grad = surrogate.fast_sigmoid(slope=75)
    beta = 0.5
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 12, 5), torch.nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        torch.nn.Conv2d(12, 64, 5), torch.nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        torch.nn.Flatten(), torch.nn.Linear(64 * 5 * 5, 10),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)

    def forward(x):  # x [B, T, ...] -> spikes [T, B, 10]
        from snntorch import utils

        utils.reset(net)
        return torch.stack([net(x[:, t])[0] for t in range(x.shape[1])])

    elapsed, hist = 0.0, []
    g = torch.Generator().manual_seed(seed)
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(y_tr), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            spk = forward(x_tr[idx])
            loss = loss_fn(spk, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        elapsed += time.perf_counter() - t0
        net.eval()
        with torch.no_grad():
            acc = float((forward(x_te).sum(0).argmax(1) == y_te).float().mean())
        hist.append({"epoch": epoch + 1, "test_accuracy": acc, "train_time_s": elapsed})
        print(f"  snntorch seed {seed} epoch {epoch + 1}: test {acc:.3f} at {elapsed:.1f} s",
              flush=True)
        if acc >= target:
            break
    return hist


def ours_run(root, seed: int, target: float, epochs: int | None):
    from spiking.training import config as C
    from spiking.training.loop import train
    from spiking.training.metrics import read_jsonl

    with tempfile.TemporaryDirectory() as out:
        over = {"model": "csnn", "dataset": "nmnist", "data_root": str(root), "seed": seed,
                    "out_dir": out, "run_name": "bench", "progress": False, "plots": False}
        if epochs:
            over["epochs"] = epochs
        cfg = C.build(None, over)
        train(cfg, log=lambda *a: None)
        hist = read_jsonl(Path(out) / "bench" / "metrics.jsonl")
    for h in hist:
        print(f"  spiking seed {seed} epoch {h['epoch']}: test {h['test_accuracy']:.3f} at "
              f"{h['train_time_s']:.1f} s", flush=True)
    return hist


def time_to(hist, target):
    for h in hist:
        if h["test_accuracy"] >= target:
            return h["train_time_s"], h["epoch"]
    return None, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(default_root()))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--max-epochs-snntorch", type=int, default=40)
    ap.add_argument("--epochs-ours", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--skip-snntorch", action="store_true")
    ap.add_argument("--json", help="also write all histories to this file")
    args = ap.parse_args(argv)
    rows, dump = [], {}
    for seed in args.seeds:
        ours = ours_run(args.data_root, seed, args.target, args.epochs_ours)
        theirs = [] if args.skip_snntorch else snntorch_run(
            args.data_root, seed, args.max_epochs_snntorch, args.target)
        dump[seed] = {"spiking": ours, "snntorch": theirs}
        t_o, e_o = time_to(ours, args.target)
        t_s, e_s = time_to(theirs, args.target)
        rows.append((seed, t_o, e_o, ours[-1]["test_accuracy"], t_s, e_s,
                     theirs[-1]["test_accuracy"] if theirs else None))
    pct = round(args.target * 100)
    print(f"\n| seed | spiking: time to {pct} % (epoch) | spiking final acc | "
          f"snnTorch: time to {pct} % (epoch) | snnTorch last acc | ratio |")
    print("|---|---|---|---|---|---|")
    for seed, t_o, e_o, a_o, t_s, e_s, a_s in rows:
        fmt = (lambda t, e: "not reached" if t is None else f"{t:.1f} s ({e})")
        ratio = f"{t_s / t_o:.1f}x" if t_o and t_s else "n/a"
        print(f"| {seed} | {fmt(t_o, e_o)} | {100 * a_o:.0f} % | {fmt(t_s, e_s)} | "
              f"{'n/a' if a_s is None else f'{100 * a_s:.0f} %'} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
