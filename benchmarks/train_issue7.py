"""Issue 7 training runs: LMUFormer vs spiking LMUFormer (FSDD->SHD-format, N-MNIST subset) and
SpikeGPT vs its non-spiking twin (RWKV, same code) as character models on Python's stdlib.

    python benchmarks/train_issue7.py fsdd    [--file SHD_FORMAT.h5] [--epochs 30]
    python benchmarks/train_issue7.py nmnist  [--epochs 15]
    python benchmarks/train_issue7.py text    [--steps 600] [--config tiny]
    python benchmarks/train_issue7.py all --out results.json

A plain Adam loop (no trainer dependency), one torch thread, seeds fixed. Splits:
- FSDD->SHD-format: ``--file`` (an SHD-layout file from ``spiking.datasets.audio``); train on
  FSDD repetitions 0-3, test on repetition 4 of every speaker and digit (``extra/source_file``
  names ``<digit>_<speaker>_<rep>.wav``); with the 60-sample shared file (repetition 0 only)
  speaker ``theo`` is held out instead.
- N-MNIST: the 1,000/100 genuine recordings of ``nmnist-subset`` (shared data).
- Text: ``stdlib_text(600_000)``; the last 10 % is the validation set; bits per character over
  non-overlapping 256-character windows of it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spiking.models.lmuformer import accuracy_vs_fraction
from spiking.models.registry import get_model

DATA = Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[1].parent
                           / "shared" / "data"))


def _fit(model, xtr, ytr, xte, yte, epochs, batch, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=epochs * math.ceil(len(ytr) / batch))
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[:, idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    train_s = time.time() - t0
    loader = [(xte[:, i:i + 64], yte[i:i + 64]) for i in range(0, len(yte), 64)]
    acc = accuracy_vs_fraction(model, loader, fractions=(0.25, 0.5, 0.75, 1.0))
    counts = model.net.op_counts(model.features(xte[:, :16]))
    return {"test_acc": acc[1.0], "acc_vs_fraction": acc, "train_s": round(train_s, 1),
            "params": counts["params"], "dense_macs_per_sample": counts["dense_macs"] // 16,
            "spike_acs_per_sample": counts["spike_acs"] // 16,
            "flops_dense_equiv_per_sample": counts["flops"] // 16,
            "op_ratio": round(counts["ratio"], 3)}


def _compare(name, shape, xtr, ytr, xte, yte, a, **model_kw):
    out = {"dataset": name, "n_train": len(ytr), "n_test": len(yte), "T": xtr.shape[0]}
    for arch in ("lmuformer", "spiking-lmuformer"):
        torch.manual_seed(0)
        m = get_model(arch, input_shape=shape, n_classes=10, **model_kw)
        out[arch] = _fit(m, xtr, ytr, xte, yte, a.epochs, a.batch, a.lr)
        print(name, arch, out[arch], flush=True)
    return out


def run_fsdd(a):
    import h5py

    from spiking.datasets import SHD, BinnedDataset

    f = Path(a.file) if a.file else DATA / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
    ds = BinnedDataset(SHD(file=f, train=False), n_time_bins=a.bins)
    with h5py.File(f) as h:
        names = [s.decode() for s in h["extra/source_file"][:]]
    reps = [int(n.split("_")[2].split(".")[0]) for n in names]
    spk = [n.split("_")[1] for n in names]
    test = [r == 4 for r in reps] if max(reps) >= 4 else [s == "theo" for s in spk]
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    x, y = torch.stack(xs, 1).flatten(2), torch.tensor(ys)
    te = torch.tensor(test)
    res = _compare(f"FSDD->SHD-format ({f.name})", (700,), x[:, ~te], y[~te], x[:, te], y[te],
                   a, dim=a.dim, order=a.order, theta=a.theta, dropout=0.1)
    res["split"] = "test = repetition 4" if max(reps) >= 4 else "test = speaker theo"
    return res


def run_nmnist(a):
    from spiking.datasets import NMNIST, BinnedDataset

    root = DATA / "nmnist-subset"
    out = []
    for train in (True, False):
        ds = BinnedDataset(NMNIST(root, train=train), n_time_bins=a.bins, cache_dir=True)
        xs, ys = zip(*[ds[i] for i in range(len(ds))])
        out += [torch.stack(xs, 1), torch.tensor(ys)]
    xtr, ytr, xte, yte = out
    return _compare("N-MNIST subset", tuple(xtr.shape[2:]), xtr, ytr, xte, yte, a,
                    dim=a.dim, order=a.order, theta=a.theta, spatial_pool=2, dropout=0.1)


def run_text(a):
    from spiking.models import spikegpt as S

    text = S.stdlib_text(600_000)
    voc = S.CharVocab(text)
    data = voc.encode(text)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    out = {"corpus": "stdlib top-level *.py, sorted, first 600,000 chars", "vocab": len(voc),
           "steps": a.steps, "seq": a.seq, "batch": a.batch_text, "config": a.config}
    for spiking in (True, False):
        torch.manual_seed(0)
        m = S.build(a.config, vocab_size=len(voc), spiking=spiking)
        opt = torch.optim.Adam(m.parameters(), lr=a.lr_text)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr_text, total_steps=a.steps)
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for _ in range(a.steps):
            ix = torch.randint(0, len(train) - a.seq - 1, (a.batch_text,), generator=g)
            x = torch.stack([train[i:i + a.seq] for i in ix], 1)
            y = torch.stack([train[i + 1:i + a.seq + 1] for i in ix], 1)
            lg, _ = m(x)
            loss = F.cross_entropy(lg.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            sched.step()
        train_s = time.time() - t0
        m.eval()
        n = 256
        wins = (len(val) - 1) // n
        xv = torch.stack([val[i * n:(i + 1) * n] for i in range(wins)], 1)
        yv = torch.stack([val[i * n + 1:(i + 1) * n + 1] for i in range(wins)], 1)
        with torch.no_grad():
            nll = sum(F.cross_entropy(m(xv[:, j:j + 32])[0].flatten(0, 1),
                                      yv[:, j:j + 32].flatten(), reduction="sum").item()
                      for j in range(0, wins, 32))
        oc = m.op_counts(xv[:, :8])
        key = "spikegpt" if spiking else "rwkv (spiking=False)"
        out[key] = {"val_bpc": round(nll / (xv.numel() * math.log(2)), 4),
                    "train_s": round(train_s, 1), "params": m.num_params(),
                    "dense_macs_per_token": oc["dense_macs"] // oc["tokens"],
                    "spike_acs_per_token": oc["spike_acs"] // oc["tokens"],
                    "dense_equivalent_macs_per_token": oc["dense_equivalent_macs"] // oc["tokens"],
                    "op_ratio_dense_over_event": round(oc["ratio"], 3)}
        print(key, out[key], flush=True)
        if spiking and a.save:
            S.save_checkpoint(a.save, m, voc, val_bpc=out[key]["val_bpc"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=["fsdd", "nmnist", "text", "all"])
    ap.add_argument("--file", help="SHD-format FSDD file (default: the shared 60-sample file)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--bins", type=int, default=50)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--order", type=int, default=16)
    ap.add_argument("--theta", type=float, default=50.0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch-text", type=int, default=16)
    ap.add_argument("--lr-text", type=float, default=4e-3)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--save", help="write the trained SpikeGPT checkpoint here")
    ap.add_argument("--out", help="append the results as JSON lines to this file")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tasks = ["fsdd", "nmnist", "text"] if a.task == "all" else [a.task]
    for t in tasks:
        res = {"fsdd": run_fsdd, "nmnist": run_nmnist, "text": run_text}[t](a)
        res["task"] = t
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(res, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
