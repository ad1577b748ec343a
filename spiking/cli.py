"""The `spiking` command. Each area adds its own subcommands; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from spiking.kernels.dispatch import BackendUnavailable

PEERS = ("torch", "numpy", "numba", "cupy-cuda12x", "cupy-cuda13x", "cupy", "matplotlib",
         "h5py", "tqdm", "tonic", "nir", "nirtorch", "snntorch", "norse", "spikingjelly",
         "neurobench", "scikit-learn")

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"

# (subcommand, help, module providing add_parser(s)(subparsers), the issue that brings it)
SLOTS = (
    ("demo train evaluate", "training and the demo", "spiking.training.cli", "add_parsers"),
    ("data", "datasets: list, info, verify, download, emulate, audio2spikes, show",
     "spiking.datasets.cli", "add_parser"),
    ("profile export", "hardware cost estimates and exports", "spiking.hardware.cli",
     "add_parsers"),
    ("generate", "stream text from a SpikeGPT checkpoint", "spiking.models.spikegpt_cli",
     "add_parser"),
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cmd_info(args) -> int:
    import torch

    from spiking import __version__
    from spiking.kernels.dispatch import backend_status

    print(f"spiking {__version__}  (python {platform.python_version()}, {platform.platform()})")
    print("packages:")
    for name in PEERS:
        v = _version(name)
        if v is not None:
            print(f"  {name:<14} {v}")
    missing = [n for n in ("numba", "tonic", "snntorch", "norse", "nir") if _version(n) is None]
    if missing:
        print(f"  not installed: {', '.join(missing)}")
    print(f"cpu threads: torch {torch.get_num_threads()}")
    from spiking.kernels.cpu import why_not_auto_tune

    why = why_not_auto_tune()
    print("cpu allocator: " + ("glibc's trim/mmap thresholds set at the first fused CPU call "
                               "(SPIKING_TUNE_MALLOC=0 keeps the defaults)" if why is None
                               else f"left as it is ({why})"))
    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})")
    print("backends:")
    for backend, reason in backend_status().items():
        print(f"  {backend:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    try:
        from spiking.kernels import nvrtc

        ok, why = nvrtc.status()
        print(f"  nvrtc      {'can compile the .cu sources (' + why + ')' if ok else 'unavailable: ' + why}")
    except ImportError:
        pass
    return 0


def cmd_bench(args) -> int:
    import runpy

    script = BENCH_DIR / f"{args.suite}.py"
    if not script.is_file():
        print(f"error: benchmark {script} not found; benchmarks live in the source checkout "
              f"(git clone, then pip install -e .)", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _unavailable(name: str, why: str):
    def handler(args) -> int:
        print(f"error: `spiking {name}` is not available in this build: {why}", file=sys.stderr)
        return 2
    return handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spiking",
        description="Spiking and liquid-time-constant recurrent networks on fused kernels, "
                    "with neuromorphic hardware cost estimates.")
    p.add_argument("--version", action="version", version=f"spiking {_version('spiking')}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sp = sub.add_parser("info", help="versions, and which backends can run here and why not")
    sp.set_defaults(func=cmd_info)
    sp = sub.add_parser("bench", help="side-by-side speed benchmarks against peers")
    suites = sorted(p.stem for p in BENCH_DIR.glob("*.py")) if BENCH_DIR.is_dir() else []
    sp.add_argument("suite", choices=suites or None,
                    help="which benchmark script of benchmarks/ to run")
    sp.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    sp.set_defaults(func=cmd_bench)
    for names, help_, module, fn in SLOTS:
        try:
            getattr(importlib.import_module(module), fn)(sub)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            for name in names.split():
                sp = sub.add_parser(name, help=f"{help_} (planned; not in this build)")
                sp.set_defaults(func=_unavailable(
                    name, f"{module} is planned but not part of this version yet"))
    return p


def main(argv=None) -> int:
    try:
        code = _main(argv)
    except BaseException:
        if not _joined_process_group():
            raise
        import traceback

        traceback.print_exc()
        code = 1
    if _joined_process_group():  # a torchrun worker: end it without interpreter shutdown
        from spiking.training.distributed import exit_worker

        exit_worker(code)
    return code


def _joined_process_group() -> bool:
    # not imported = no process group joined (keeps `spiking --help` free of torch.distributed)
    mod = sys.modules.get("spiking.training.distributed")
    return bool(mod is not None and mod.joined())


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, BackendUnavailable) as e:
        if os.environ.get("SPIKING_DEBUG"):
            raise
        print(f"error: {e}\n(set SPIKING_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
