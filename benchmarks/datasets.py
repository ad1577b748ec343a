"""Dataset speed: N-MNIST decoding, SHD reading and binning, against tonic 1.7.

Usage: ``python benchmarks/datasets.py [--data ../shared/data] [--device cpu|cuda] [--reps 3]
[--only decode,shd,binning,audio]``. Prints a markdown table (best of ``--reps`` runs, warm file
cache).

* decode:  every ``.bin`` of the N-MNIST subset read and decoded, ``spiking.datasets.
  read_nmnist_file`` vs ``tonic.io.read_mnist_file`` (both include the file read).
* shd:     every sample of the FSDD->SHD-format file through ``SHD.__getitem__`` vs tonic's
  ``SHD.__getitem__`` (tonic reopens the HDF5 file per sample).
* binning: a batch of N-MNIST recordings to dense frames, ``bin_events_batch`` (one vectorised
  call; ``--device cuda`` runs it on the GPU with the events already there) vs a loop of
  ``tonic.transforms.ToFrame`` over the same recordings, for ``n_time_bins`` and ``time_window``.
* audio:   audio-to-spike conversion vs lauscher, provided by ``spiking.datasets.audio.bench``
  when that module exists (run only if it does).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from spiking.datasets import NMNIST, SHD, bin_events_batch, read_nmnist_file

ROWS: list[tuple[str, str, str, str, str]] = []


def best_time(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(what, unit, ours, theirs, n):
    ROWS.append((what, unit, f"{n / ours:,.0f}", f"{n / theirs:,.0f}", f"{theirs / ours:.2f}x"))


def bench_decode(args):
    import tonic

    paths = [p for split in (True, False)
             for p, _ in NMNIST(root=args.data / "nmnist-subset", train=split).samples]
    n_events = sum(len(read_nmnist_file(p)) for p in paths)
    ours = best_time(lambda: [read_nmnist_file(p) for p in paths], args.reps)
    dt = tonic.datasets.NMNIST.dtype
    theirs = best_time(lambda: [tonic.io.read_mnist_file(p, dtype=dt) for p in paths], args.reps)
    row(f"N-MNIST decode ({len(paths)} files)", "events/s", ours, theirs, n_events)
    row(f"N-MNIST decode ({len(paths)} files)", "files/s", ours, theirs, len(paths))


def bench_shd(args):
    import tempfile

    import tonic

    src = args.data / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
    ds = SHD(file=src, train=False)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "SHD").mkdir()
        os.symlink(src, Path(d) / "SHD" / "shd_test.h5")
        tonic.datasets.SHD._check_exists = lambda self: True  # offline copy, no archive
        ref = tonic.datasets.SHD(save_to=d, train=False)
        ours = best_time(lambda: [ds[i] for i in range(len(ds))], args.reps)
        theirs = best_time(lambda: [ref[i] for i in range(len(ref))], args.reps)
    row(f"SHD-format read ({len(ds)} samples)", "samples/s", ours, theirs, len(ds))


def bench_binning(args):
    from tonic.transforms import ToFrame

    ds = NMNIST(root=args.data / "nmnist-subset", train=True)
    evs = [ds[i][0] for i in range(args.batch)]
    n_events = sum(len(e) for e in evs)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        inputs = [{k: torch.as_tensor(e[k]).to(dev) for k in e.dtype.names} for e in evs]
    else:
        inputs = evs

    def ours_fn(kw):
        def run():
            out, _ = bin_events_batch(inputs, ds.sensor_size, **kw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out
        return run

    for kw in ({"n_time_bins": 30}, {"time_window": 1_000}, {"time_window": 10_000,
                                                                  "overlap": 5_000}):
        tf = ToFrame(sensor_size=ds.sensor_size, **kw)
        ours = best_time(ours_fn(kw), args.reps)
        theirs = best_time(lambda tf=tf: [tf(e) for e in evs], args.reps)
        label = ", ".join(f"{k}={v}" for k, v in kw.items())
        row(f"binning B={args.batch} ({label}) [{dev.type}]", "events/s", ours, theirs, n_events)


def bench_audio(args):
    """Audio-to-spikes vs lauscher: rows from ``spiking.datasets.audio.bench(args)`` if present."""
    try:
        from spiking.datasets.audio import bench
    except ImportError:
        print("audio: spiking.datasets.audio.bench not available; skipped")
        return
    for r in bench(args) or []:
        if not isinstance(r, (tuple, list)) or len(r) != 5:
            raise ValueError(f"audio bench rows must be (what, unit, ours, peer, speed-up): {r!r}")
        ROWS.append(tuple(str(v) for v in r))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPIKING_DATA", default)))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--only", default="decode,shd,binning,audio")
    ap.add_argument("--clips", type=int, default=3, help="audio: FSDD clips to convert")
    ap.add_argument("--lauscher", action="store_true",
                    help="audio: also time lauscher on one clip (slow: about a minute)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.only.split(","):
        {"decode": bench_decode, "shd": bench_shd, "binning": bench_binning,
         "audio": bench_audio}[name.strip()](args)
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "-"
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"GPU {gpu}; numpy {np.__version__}, torch {torch.__version__}")
    print("| what | unit | spiking | tonic/peer | speed-up |\n|---|---|---:|---:|---:|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
