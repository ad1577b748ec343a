"""Neuron kernels side by side: our backends against snnTorch, Norse and SpikingJelly.

``python benchmarks/neurons.py [--json out.json] [--repeat 7] [--quick]`` (also importable:
``main(argv)``, for ``spiking bench neurons``). Prints a Markdown table with forward and
forward+backward median times, the ratio of each peer to our fused kernel of the same neuron,
activation memory, and effective bandwidth as a share of this machine's measured copy
bandwidth (a large tensor copy, read + write bytes / time).

Effective bandwidth counts the bytes an ideal fused kernel must move per neuron-step in
float32: forward 12 B (read x, write spikes, write the 4 B state kept for backward),
forward+backward 24 B (plus read grad, read state, write grad x). Memory is the bytes saved
for backward (``torch.autograd.graph.saved_tensors_hooks``) on CPU, and the peak allocated
memory on GPU. Forward+backward backpropagates ``out.sum()``; one more row of our LIF
backpropagates a dense random gradient instead (every step's gradient read). On CPU the table
also gives the minor page faults per forward+backward call. The allocator is tuned as our
first fused CPU call tunes it (``spiking.kernels.cpu.auto_tune_malloc``), before every row;
``SPIKING_TUNE_MALLOC=0`` runs the whole table with glibc's defaults. Peers, each the closest
equivalent of the row it is compared with:

- snnTorch ``Leaky`` (subtract reset, atan surrogate) looped over T  vs our ``LIF``;
- Norse ``LIFBoxCell`` looped over T (LIF without synaptic current) vs our ``LIF``;
- Norse ``LIF`` (sequence module, current-based LIF)                 vs our ``CubaLIF``;
- SpikingJelly ``LIFNode(step_mode="m")`` (multi-step)               vs our ``LIF``.

SpikingJelly's CuPy LIF exists up to release 0.0.0.0.14; 2.0 replaced it with its own CUDA /
Triton / torch dispatch (``SJ_LIF_CUDA_IMPLEMENTATION``). On a GPU the table has a ``(cupy)``
row either way: with 2.x it says why it did not run. ``benchmarks/gpu_check.sh`` runs the table
with 0.0.0.0.14 and once more with 2.0.0 (``--peers SpikingJelly``).

On a GPU, also the Open Neuromorphic replica (Linear(N, N) + LIF, B=16, T=500, N in 4096,
8192, 16384): ours against SpikingJelly (cupy and torch), snnTorch and Norse, time and peak
memory as ratios to ours, with the TF32 state of the matmuls.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import math
import os
import platform
import statistics
import time

import numpy as np
import torch

CPU_SHAPES = [(100, 32, 512), (500, 16, 128)]
GPU_SHAPES = [(128, 1, 2**20)]
ON_SIZES = [4096, 8192, 16384]  # Open Neuromorphic replica: Linear(N, N) + LIF, B=16, T=500
TAU, DT = 10e-3, 1e-3
# Our LIF once more, its backward fed a dense random gradient (as from a next layer) instead of
# the gradient of .sum(), which is broadcast over time and which our kernels read as one row.
DENSE = "ours {} LIF, dense output gradient"
BETA = math.exp(-DT / TAU)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device, mbytes=512, repeat=5) -> float:
    """Bytes/s of a large tensor copy (read + write)."""
    a = torch.ones(mbytes * 2**20 // 4, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    _sync(device)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * 4 / best


def median_time(fn, device, repeat) -> float:
    fn()
    _sync(device)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def faults_per_call(fn, repeat=5) -> float:
    """Minor page faults per call of ``fn`` (fresh pages the OS maps in and zeroes: with
    glibc's defaults, big buffers freed by one call are often handed back to the OS and
    faulted in again by the next; see ``spiking.kernels.cpu.tune_malloc``)."""
    import resource

    fn()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeat):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / repeat


def saved_bytes(fn) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


# ---- runners: factory(device) returns f(x) -> spikes [T, B, N], its module on that device --

def ours(kind, backend, device):
    import spiking

    cls = {"LIF": spiking.LIF, "CubaLIF": spiking.CubaLIF}[kind]
    m = cls(tau_mem=TAU, dt=DT, backend=backend).to(device)
    return lambda x: m(x)[0]


def snntorch_leaky(device):
    import snntorch as snn

    lif = snn.Leaky(beta=BETA, threshold=1.0, reset_mechanism="subtract").to(device)

    def run(x):
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            s, mem = lif(x[t], mem)
            out.append(s)
        return torch.stack(out)
    return run


def norse_lif(device):
    import norse.torch as nt

    m = nt.LIF(nt.LIFParameters(tau_mem_inv=torch.tensor(1 / TAU, device=device)),
               dt=DT).to(device)
    return lambda x: m(x)[0]


def norse_lifbox(device):
    import norse.torch as nt

    cell = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(1 / TAU, device=device)),
                         dt=DT).to(device)

    def run(x):
        state, out = None, []
        for t in range(x.shape[0]):
            s, state = cell(x[t], state)
            out.append(s)
        return torch.stack(out)
    return run


def spikingjelly_version() -> str | None:
    try:
        return importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        return None


def spikingjelly_lif(device, backend=None):
    """SpikingJelly's multi-step ``LIFNode``. Its CuPy backend exists up to 0.0.0.0.14 (the
    ``backend=`` argument); 2.0 removed it (there a CUDA tensor goes to SpikingJelly's native
    CUDA, Triton or torch implementation, chosen by ``SJ_LIF_CUDA_IMPLEMENTATION``)."""
    from spikingjelly.activation_based import functional, neuron

    legacy = "backend" in inspect.signature(neuron.LIFNode).parameters
    if backend == "cupy" and not legacy:
        raise RuntimeError(f"SpikingJelly {spikingjelly_version()} has no CuPy backend "
                           "(removed in 2.0; spikingjelly==0.0.0.0.14 has it)")
    if backend == "cupy" and not hasattr(np, "int"):
        # 0.0.0.0.14's CuPy launcher compares integer arguments' dtype with np.int, which
        # NumPy 1.24 removed (spikingjelly issue #595): restore the alias of int it meant.
        np.int = int
    kw = {"backend": backend or "torch"} if legacy else {}
    m = neuron.LIFNode(tau=TAU / DT, decay_input=False, step_mode="m", **kw).to(device)

    def run(x):
        functional.reset_net(m)
        return m(x)
    return run


def peers(device, only=None):
    """(label, compared-with label, factory) for every peer; ``only``: keep the labels that
    contain one of these strings (case-insensitive)."""
    sj = "SpikingJelly LIFNode m (torch)"
    if device.type == "cuda" and (spikingjelly_version() or "0").split(".")[0] not in ("", "0"):
        # 2.x picks its CUDA implementation itself: say which one was asked for
        sj = ("SpikingJelly LIFNode m (SJ_LIF_CUDA_IMPLEMENTATION="
              f"{os.environ.get('SJ_LIF_CUDA_IMPLEMENTATION', 'auto')})")
    out = [("snnTorch Leaky", "ours cpu LIF", snntorch_leaky),
           ("Norse LIFBoxCell loop", "ours cpu LIF", norse_lifbox),
           ("Norse LIF", "ours cpu CubaLIF", norse_lif),
           (sj, "ours cpu LIF", spikingjelly_lif)]
    if device.type == "cuda":
        out = [(a, b.replace("cpu", "cuda"), f) for a, b, f in out]
        out.append(("SpikingJelly LIFNode m (cupy)", "ours cuda LIF",
                    lambda d: spikingjelly_lif(d, "cupy")))
    if only:
        out = [p for p in out if any(o.lower() in p[0].lower() for o in only)]
    return out


def bench_shape(shape, device, repeat, bw, only=None) -> list[dict]:
    t, b, n = shape
    x0 = torch.rand(shape, device=device) * 0.3
    fused = "cuda" if device.type == "cuda" else "cpu"
    runners = [(f"ours reference {k}", None, lambda d, k=k: ours(k, "reference", d))
               for k in ("LIF", "CubaLIF")]
    runners += [(f"ours {fused} {k}", None, lambda d, k=k: ours(k, fused, d)) for k in ("LIF",
                                                                                 "CubaLIF")]
    runners.append((DENSE.format(fused), None, lambda d: ours("LIF", fused, d)))
    runners += peers(device, only)
    rows, steps = [], t * b * n
    grad = torch.randn(shape, device=device)
    for label, versus, factory in runners:
        row = {"shape": f"T={t} B={b} N={n}", "impl": label, "versus": versus}
        try:
            f = factory(device)
            xg = x0.clone().requires_grad_()

            def fwd(f=f):
                with torch.no_grad():
                    f(x0)

            def fwd_bwd(f=f, xg=xg, dense=label == DENSE.format(fused)):
                if dense:
                    f(xg).backward(grad)
                else:
                    f(xg).sum().backward()
            row["fwd_ms"] = median_time(fwd, device, repeat) * 1e3
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row["fwd_bwd_ms"] = median_time(fwd_bwd, device, repeat) * 1e3
            if device.type == "cpu":
                row["faults"] = faults_per_call(fwd_bwd)
            row["mem_mb"] = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                             else saved_bytes(lambda f=f, xg=xg: f(xg))) / 2**20
            row["fwd_bw_pct"] = 100 * 12 * steps / bw / (row["fwd_ms"] / 1e3)
            row["fwd_bwd_bw_pct"] = 100 * 24 * steps / bw / (row["fwd_bwd_ms"] / 1e3)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
        rows.append(row)
    by_label = {r["impl"]: r for r in rows}
    for r in rows:
        ref = by_label.get(r["versus"] or "")
        if ref and "fwd_ms" in r and "fwd_ms" in ref:
            r["fwd_ratio"] = r["fwd_ms"] / ref["fwd_ms"]
            r["fwd_bwd_ratio"] = r["fwd_bwd_ms"] / ref["fwd_bwd_ms"]
    return rows


def bench_open_neuromorphic(device, repeat, sizes=ON_SIZES, t=500, b=16,
                            only=None) -> list[dict]:
    """Linear(N, N) + LIF, B=16, T=500, forward+backward of ``out.sum()``: ours and every
    installed peer at each N (on a GPU: ours cuda against SpikingJelly's cupy and torch
    multi-step LIF, snnTorch, Norse), time, peak memory (GPU) and the TF32 state. The Linear
    runs over all T steps at once for every implementation, so the rows differ by the neuron.
    Device-generic so that it can be smoke-tested on the CPU with small sizes."""
    fused = "cuda" if device.type == "cuda" else "cpu"
    ours_label = f"ours {fused} Linear+LIF"
    runners = [(ours_label, lambda d: ours("LIF", fused, d))]
    runners += [(f"{label} Linear+LIF", f) for label, versus, f in peers(device, only)
                if not versus.endswith("CubaLIF")]
    rows = []
    for n in sizes:
        x = torch.rand(t, b, n, device=device)
        for label, factory in runners:
            row = {"shape": f"ON T={t} B={b} N={n}", "impl": label,
                   "versus": None if label == ours_label else ours_label}
            try:
                lin = torch.nn.Linear(n, n, device=device)
                f = factory(device)

                def step(lin=lin, f=f, x=x):
                    f(lin(x)).sum().backward()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                row["fwd_bwd_ms"] = median_time(step, device, repeat) * 1e3
                if device.type == "cuda":
                    row["mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    row["tf32"] = torch.backends.cuda.matmul.allow_tf32
                del lin, f
            except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
            rows.append(row)
        del x
    ref = {r["shape"]: r for r in rows if r["impl"] == ours_label and "fwd_bwd_ms" in r}
    for r in rows:
        base = ref.get(r["shape"])
        if base is not None and r["versus"] and "fwd_bwd_ms" in r:
            r["fwd_bwd_ratio"] = r["fwd_bwd_ms"] / base["fwd_bwd_ms"]
            if "mem_mb" in r:
                r["mem_ratio"] = r["mem_mb"] / base["mem_mb"]
    return rows


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        info["cpu"], info["cores"] = (names[0] if names else platform.processor()), len(names)
    except OSError:
        info["cpu"] = platform.processor()
    for mod in ("numba", "snntorch", "norse", "spikingjelly", "cupy"):
        try:  # SpikingJelly has no __version__: its distribution's metadata has it
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", None) or importlib.metadata.version(mod)
        except Exception:  # noqa: BLE001
            info[mod] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def fmt(v, spec=".2f"):
    return "—" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = ("| shape | implementation | fwd ms | fwd+bwd ms | peer / ours (fwd, fwd+bwd) | "
            "memory MB | fwd % copy BW | fwd+bwd % copy BW | page faults per fwd+bwd |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['impl']} | not run: {r['error']} ||||||| ")
            continue
        ratio = (f"{r['fwd_ratio']:.1f}x, {r['fwd_bwd_ratio']:.1f}x vs {r['versus']}"
                 if "fwd_ratio" in r else
                 f"-, {r['fwd_bwd_ratio']:.1f}x vs {r['versus']}" if "fwd_bwd_ratio" in r
                 else "")
        if "mem_ratio" in r:
            ratio += f"; memory {r['mem_ratio']:.2f}x"
        if "tf32" in r:
            ratio += f" (TF32 {'on' if r['tf32'] else 'off'})"
        lines.append(f"| {r['shape']} | {r['impl']} | {fmt(r.get('fwd_ms'))} | "
                     f"{fmt(r.get('fwd_bwd_ms'))} | {ratio} | {fmt(r.get('mem_mb'), '.1f')} | "
                     f"{fmt(r.get('fwd_bw_pct'), '.0f')} | {fmt(r.get('fwd_bwd_bw_pct'), '.0f')} | "
                     f"{fmt(r.get('faults'), '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--repeat", type=int, default=7, help="timed repetitions (median)")
    ap.add_argument("--quick", action="store_true", help="first CPU shape only")
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    ap.add_argument("--peers", type=lambda v: [p for p in v.split(",") if p],
                    help="only the peers whose label contains one of these comma-separated "
                         "strings, e.g. 'SpikingJelly' (our rows always run)")
    args = ap.parse_args(argv)
    info = machine()
    # What our first fused CPU call would do, done before any row so that every row (ours,
    # reference, peers) runs with the same allocator; SPIKING_TUNE_MALLOC=0 measures without.
    from spiking.kernels.cpu import auto_tune_malloc

    info["malloc_tuned"] = auto_tune_malloc()
    rows = []
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        bw = copy_bandwidth(device)
        info[f"copy_bandwidth_gbs_{device.type}"] = bw / 1e9
        shapes = CPU_SHAPES if device.type == "cpu" else GPU_SHAPES
        for shape in shapes[:1] if args.quick else shapes:
            rows += bench_shape(shape, device, args.repeat, bw, args.peers)
        if device.type == "cuda" and not args.quick:
            rows += bench_open_neuromorphic(device, args.repeat, only=args.peers)
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
