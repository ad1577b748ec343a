"""Run the CUDA kernels (``spiking/kernels/cuda/*.cu``) on the CPU: a stand-in for CuPy.

No GPU has been lent to most sessions of this project, so the CuPy paths would otherwise only be
compile-checked. This module compiles each ``.cu`` source with g++ against ``cuda_emu.h`` (CUDA's
built-ins as plain C++; every CUDA thread a fiber, see that header) and installs a small
``cupy`` stand-in (``RawModule``, ``from_dlpack``, ``cuda.Device``, ``cuda.ExternalStream``)
so that the real wrappers (``spiking/kernels/cuda_*.py``) run unchanged on CPU tensors: their
argument packing, buffer sizes, launch shapes and the kernels' indexing and math are all
exercised. What it cannot show: speed, the GPU's own ``expf``/``exp`` rounding (glibc's here),
and races between threads that are not ordered by a barrier (each launch is one legal
schedule; the tests run blocks and threads in both orders). Out-of-bounds reads and writes
show only when built with AddressSanitizer (``SPIKING_EMU_ASAN=1``, see :func:`asan_env`).

Checks beyond the results, each a launch error (:class:`EmulationError`):
- every argument against the kernel's C++ signature: count, pointer/integer/float kind and
  size. CuPy passes a pointer to each value and the driver reads as many bytes as the kernel's
  parameter has, so e.g. a float64 for a float parameter, or a 4-byte integer for an 8-byte
  one, is garbage on a GPU; CuPy itself checks neither;
- arrays must be C-contiguous (a kernel receives only the data pointer);
- launch shapes within CUDA's limits (1,024 threads per block; grid y, z <= 65,535), no empty
  grid or block; dynamic shared memory <= 48 KiB;
- barrier divergence, warp shuffles without all 32 lanes, deadlocks (``cuda_emu.h``).

And one check the CPU tensors would otherwise hide: which device a tensor would be on.
:class:`DeviceTracker` (active in every emulated test) follows the tensors that stand for GPU
tensors (moved or created with ``device=DEVICE``, "cpu:0", or computed from such) and those
that are plainly on the host (made without a device), and raises where a GPU would refuse: an
op mixing the two (a 0-dim host tensor is allowed, as in torch), ``.numpy()`` of a GPU tensor,
or a host tensor (or its data pointer) handed to a kernel. Its limit: torch runs the body of a
custom op (``torch.library``: the LIF family, LI, LTC) with the mode off, so tensors made in
there are unknown to it; the op's inputs and outputs are followed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
CACHE = Path(tempfile.gettempdir()) / f"spiking-cuda-emu-{os.getuid()}"
# g++ flags: C++17 as NVRTC gets; no contraction of a*b+c into an FMA (the kernels are
# compiled with --fmad=false); no fast-math.
CXXFLAGS = ("-std=c++17", "-O2", "-fPIC", "-ffp-contract=off", "-fno-fast-math",
            "-DSPIKING_CUDA_EMULATION", "-Wno-attributes")
# SPIKING_EMU_ASAN=1: also AddressSanitizer, so that a kernel's read or write outside the tensor
# it was given aborts with a report (torch's CPU tensors come from malloc, which ASan pads with
# poisoned red zones). The process must start with libasan preloaded: see asan_env().
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")


def cxxflags() -> tuple[str, ...]:
    return CXXFLAGS + (ASAN_FLAGS if os.environ.get("SPIKING_EMU_ASAN") == "1" else ())


def asan_env() -> dict[str, str] | None:
    """Environment for a child process that runs the emulator under AddressSanitizer (None
    where g++ has no libasan). libstdc++ is preloaded after libasan: without it ASan's
    __cxa_throw interceptor is unresolved and the first C++ exception (triton's import, via
    torch) aborts the process."""
    libs = [subprocess.run(["g++", f"-print-file-name={n}"], capture_output=True,
                           text=True).stdout.strip() for n in ("libasan.so", "libstdc++.so")]
    if not all(os.path.isabs(p) for p in libs):
        return None
    return {**os.environ, "SPIKING_EMU_ASAN": "1", "LD_PRELOAD": " ".join(libs),
            # CPython and torch keep memory to the end (not leaks of the kernels); torch's
            # allocator is not ASan's to check for new/delete mismatches
            "ASAN_OPTIONS": "detect_leaks=0:alloc_dealloc_mismatch=0"}
# CUDA limits (CUDA C++ Programming Guide, "Compute Capabilities", table of technical
# specifications: compute capability 8.x / 9.0).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2 ** 31 - 1, 65535, 65535)

order = "forward"  # thread schedule inside a block: "forward" or "reverse" (set by tests)


class EmulationError(RuntimeError):
    """A launch that would be wrong on a GPU: the message says what and where."""


_PROBE = 'extern "C" __global__ void probe(float* y) { y[threadIdx.x] = 1.f; }\n'


@functools.cache
def unavailable() -> str | None:
    """Why the emulator cannot run here (None when it can): Linux and a g++ that builds the
    header (C++17, _Float16: GCC >= 12 on x86-64) are needed."""
    if sys.platform != "linux":
        return f"the CUDA emulator needs Linux (ucontext fibers), this is {sys.platform}"
    if shutil.which("g++") is None:
        return "g++ not found: the CUDA emulator compiles the .cu sources with it"
    try:
        build(_PROBE)
    except EmulationError as e:
        return f"g++ cannot build the CUDA emulator here: {str(e)[-600:]}"
    return None


def real_cuda_reason() -> str | None:
    """Why the real CuPy path cannot run here (None when a GPU and CuPy are there)."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import cupy  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means no CuPy path
        return f"cupy cannot be imported ({type(e).__name__}: {e}): pip install 'spiking[cuda]'"
    return None


def needs_gpu(fn):
    """Marker of a test that only a real GPU can run (torch.compile, streams): marked ``cuda``
    and skipped with :func:`real_cuda_reason`."""
    import pytest

    reason = real_cuda_reason()
    return pytest.mark.cuda(pytest.mark.skipif(reason is not None, reason=str(reason))(fn))


_DYN_SMEM = re.compile(r"extern\s+__shared__\s+(?:__align__\((\d+)\)\s+)?"
                       r"([A-Za-z_][\w ]*?)\s+(\w+)\s*\[\s*\]\s*;")
_KERNEL = re.compile(r'extern\s+"C"\s+void\s+(\w+)\s*\(')


def _rewrite(code: str) -> str:
    """``extern __shared__`` arrays -> one static buffer of the launch limit, poisoned per block."""
    def sub(m):
        align = max(int(m.group(1) or 16), 16)
        ty, name = m.group(2).strip(), m.group(3)
        return (f"alignas({align}) static {ty} {name}[::emu::kDynSmemMax / sizeof({ty})]; "
                f"static int emu_reg_{name} = ::emu::register_dyn_smem("
                f"reinterpret_cast<unsigned char*>({name}), sizeof({name}));")
    return _DYN_SMEM.sub(sub, code)


def _flags(options) -> list[str]:
    """NVRTC options -> g++ include flags (the other known options are in CXXFLAGS)."""
    inc = []
    for o in options:
        if o.startswith("--include-path="):
            inc.append("-I" + o.split("=", 1)[1])
        elif o in ("--std=c++17", "--fmad=false"):
            continue  # CXXFLAGS has both
        else:
            raise EmulationError(f"NVRTC option {o!r} is not emulated (cuda_emu.py knows "
                                 "--include-path=, --std=c++17, --fmad=false)")
    return inc


def _run(cmd: list[str], what: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise EmulationError(f"{what} failed ({' '.join(cmd[:2])} ...):\n{r.stderr[-4000:]}")
    return r.stdout


_BUILT: dict[tuple[str, tuple], tuple[ctypes.CDLL, list[str]]] = {}


def build(code: str, options=()) -> tuple[ctypes.CDLL, list[str]]:
    """Compile a CUDA source for the emulator -> (library, kernel names); cached by content
    (in this process by source text and options, on disk by the preprocessed text)."""
    if (code, tuple(options)) in _BUILT:
        return _BUILT[code, tuple(options)]
    inc = _flags(options)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        src = Path(tmp, "kernel.cu")
        src.write_text(_rewrite(code))
        base = ["g++", *cxxflags(), "-x", "c++", "-include", str(HEADER), *inc]
        # -P: no line markers, which name the temporary folder and would change the key
        pre = _run([*base, "-E", "-P", str(src)], "preprocessing")
        names = [k for k in _KERNEL.findall(pre) if not k.startswith("emu_")]
        key = hashlib.sha256((pre + HEADER.read_text() + " ".join(cxxflags())).encode())
        key = key.hexdigest()[:24]
        lib_path = CACHE / f"{key}.so"
        if not lib_path.exists():
            tu = Path(tmp, "tu.cpp")
            tu.write_text(f'#include "{src}"\n' + "".join(f"EMU_EXPORT({k})\n" for k in names)
                          + "EMU_RUNTIME\n")
            out = Path(tmp, "lib.so")
            _run([*base, "-shared", "-o", str(out), str(tu)], "compiling for the emulator")
            os.replace(out, lib_path)  # atomic: a parallel run sees the whole library or none
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint),
                               ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t, ctypes.c_int,
                               ctypes.c_char_p, ctypes.c_int]
    _BUILT[code, tuple(options)] = (lib, names)
    return lib, names


# ---- which device each tensor would be on ------------------------------------------------------

DEVICE = "cpu:0"  # what the emulated tests use for "cuda": a CPU device, told apart by its index
DEV, HOST = "GPU", "host"
# ops that take tensors of both sides on a GPU too: copies across devices, indexing with a CPU
# index, the moves themselves, printing
_MIXED_OK = {"copy_", "__getitem__", "__setitem__", "to", "cpu", "cuda", "__repr__", "__str__",
             "__format__"}
TRACKER = None  # the active DeviceTracker, for the kernel-argument check


def _device_arg(args, kwargs):
    """The device a call names (``device=`` or a device-like positional of ``.to``), else None."""
    d = kwargs.get("device")
    if d is None:
        for a in args[1:2]:  # Tensor.to(device, ...) / Tensor.to("cpu:0")
            if isinstance(a, (str, torch.device)):
                d = a
    return None if d is None else torch.device(d)


class DeviceTracker(TorchFunctionMode):
    """Follows which CPU tensors stand for GPU tensors (see the module docstring).

    A tensor's side is GPU (moved or created with ``device=DEVICE``, or computed from a GPU
    tensor), host (created without a device, ``.cpu()``, or computed from host tensors only), or
    unknown (anything else, e.g. made by the code under test with ``device=x.device``, which is
    plain "cpu" here, or by autograd): unknown mixes with both."""

    def __init__(self):
        super().__init__()
        self._where = WeakIdKeyDictionary()

    def side(self, t):
        return self._where.get(t)

    def check_pointer(self, ptr: int, what: str) -> None:
        """A kernel's pointer argument: an error when the only live tensors known to start at
        that address are host ones."""
        with torch._C.DisableTorchFunction():
            at = [sd for t, sd in list(self._where.items())
                  if t.numel() > 0 and t.data_ptr() == ptr]
        if at and all(sd == HOST for sd in at):
            raise EmulationError(f"{what}: the data of a host (CPU) tensor was handed to a "
                                 "kernel: on a GPU that is an illegal memory access")

    def __enter__(self):
        global TRACKER
        self._outer = TRACKER
        TRACKER = self
        return super().__enter__()

    def __exit__(self, *exc):
        global TRACKER
        TRACKER = self._outer
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        sides = [self._where.get(t) for t in ins]
        if name not in _MIXED_OK and DEV in sides:
            host = [t for t, sd in zip(ins, sides) if sd == HOST and t.dim() > 0]
            if host:
                raise EmulationError(
                    f"{name or func}: a GPU tensor with a host (CPU) tensor of shape "
                    f"{tuple(host[0].shape)}; on a GPU: 'Expected all tensors to be on the same "
                    "device'")
        if name == "numpy" and DEV in sides:
            raise EmulationError(".numpy() of a GPU tensor (on a GPU: move it with .cpu() first)")
        out = func(*args, **kwargs)
        if name == "__set__" and len(ins) == 2 and ins[0] is args[0]:  # t.data = other
            self._where.pop(ins[0], None)
            if sides[1] is not None:
                self._where[ins[0]] = sides[1]
            return out
        dev = _device_arg(args, kwargs) if name not in ("cpu", "cuda") else None
        if name == "cpu" and out is not args[0]:
            side = HOST
        elif name == "cuda" or dev == torch.device(DEVICE):
            side = DEV
        elif dev is not None or name == "cpu":
            # plain "cpu" (the code's own device choice, e.g. x.device), or a .cpu() that
            # returned its input itself (a GPU tensor for the code, a host one for its caller)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._where.pop(t, None)
            return out
        elif not ins:  # a factory without a device: the host
            side = HOST
        elif DEV in sides:
            side = DEV
        elif HOST in sides and all(sd == HOST or t.dim() == 0 for t, sd in zip(ins, sides)):
            side = HOST
        else:
            side = None
        if side is not None:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._where[t] = side
        return out


# ---- the cupy stand-in -------------------------------------------------------------------------

class EmuArray:
    """What ``cupy.from_dlpack`` gives here: the tensor (kept alive) and its data pointer."""

    def __init__(self, t: torch.Tensor):
        if t.device.type != "cpu":
            raise EmulationError(f"the emulator runs on CPU tensors, got one on {t.device}")
        if TRACKER is not None and TRACKER.side(t) == HOST:
            raise EmulationError(f"a host (CPU) tensor of shape {tuple(t.shape)} was handed to a "
                                 "kernel: on a GPU that is an illegal memory access")
        self.tensor = t
        self.contiguous = t.is_contiguous()
        self.ptr = t.data_ptr()


_INT = {1: ctypes.c_int8, 2: ctypes.c_int16, 4: ctypes.c_int32, 8: ctypes.c_int64}
_UINT = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}
_FLOAT = {4: ctypes.c_float, 8: ctypes.c_double}


def _pack(a):
    """-> (kind code as in cuda_emu.h's signature, ctypes value)."""
    if isinstance(a, EmuArray):
        return "p", ctypes.c_uint64(a.ptr)
    if isinstance(a, (bool, np.bool_)):
        return "b1", ctypes.c_bool(bool(a))
    if isinstance(a, np.integer):
        n = a.dtype.itemsize
        table = _UINT if a.dtype.kind == "u" else _INT
        return f"i{n}", table[n](int(a))
    if isinstance(a, np.floating) and a.dtype.itemsize in _FLOAT:
        return f"f{a.dtype.itemsize}", _FLOAT[a.dtype.itemsize](float(a))
    # CuPy passes Python int as long long and float as double (CuPy user guide, "User-Defined
    # Kernels", raw kernels)
    if isinstance(a, int):
        return "i8", ctypes.c_int64(a)
    if isinstance(a, float):
        return "f8", ctypes.c_double(a)
    raise EmulationError(f"kernel argument of type {type(a).__name__} is not something CuPy "
                         "passes to a RawKernel (array, numpy scalar, int, float or bool)")


def _dims(v, what: str) -> tuple[int, int, int]:
    v = (v,) if isinstance(v, int) else tuple(v)
    if not 1 <= len(v) <= 3 or not all(isinstance(d, (int, np.integer)) for d in v):
        raise EmulationError(f"{what} must be 1 to 3 integers, got {v!r}")
    return tuple(int(d) for d in v) + (1,) * (3 - len(v))


class Function:
    def __init__(self, lib: ctypes.CDLL, name: str):
        self.name = name
        self._lib = lib
        self._call = ctypes.cast(getattr(lib, f"emu_call_{name}"), ctypes.c_void_p)
        sig = getattr(lib, f"emu_sig_{name}")
        sig.restype = ctypes.c_char_p
        text = sig().decode()
        self.signature = text.split(",") if text else []

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None):
        LAUNCHES.append((self.name, grid, block, shared_mem))
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if min(grid) < 1 or min(block) < 1:
            raise EmulationError(f"{self.name}: empty launch grid={grid} block={block} "
                                 "(CUDA: invalid configuration argument)")
        if (np.prod(block) > MAX_THREADS_PER_BLOCK or any(b > m for b, m in zip(block, MAX_BLOCK))
                or any(g > m for g, m in zip(grid, MAX_GRID))):
            raise EmulationError(f"{self.name}: launch grid={grid} block={block} exceeds CUDA's "
                                 f"limits (block <= {MAX_BLOCK}, {MAX_THREADS_PER_BLOCK} threads; "
                                 f"grid <= {MAX_GRID})")
        args = tuple(args)
        if len(args) != len(self.signature):
            raise EmulationError(f"{self.name} takes {len(self.signature)} arguments, "
                                 f"{len(args)} given")
        vals = []
        for i, (a, want) in enumerate(zip(args, self.signature)):
            got, v = _pack(a)
            if isinstance(a, EmuArray) and not a.contiguous:
                raise EmulationError(f"{self.name} argument {i}: a non-contiguous array (shape "
                                     f"{tuple(a.tensor.shape)}, strides {a.tensor.stride()}); "
                                     "the kernel gets only its data pointer")
            ok = got == want or (want == "p" and got == "i8")
            if want == "p" and got == "i8" and TRACKER is not None and int(a):
                TRACKER.check_pointer(int(a), f"{self.name} argument {i}")
            if not ok:
                raise EmulationError(f"{self.name} argument {i}: the kernel takes "
                                     f"{_describe(want)}, got {_describe(got)} "
                                     f"({type(a).__name__})")
            vals.append(v)
        params = (ctypes.c_void_p * max(1, len(vals)))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
        err = ctypes.create_string_buffer(2048)
        rc = self._lib.emu_launch(self._call, params, (ctypes.c_uint * 3)(*grid),
                                  (ctypes.c_uint * 3)(*block), int(shared_mem),
                                  int(order == "reverse"), err, len(err))
        if rc != 0:
            raise EmulationError(f"{self.name}: {err.value.decode()}")


LAUNCHES: list[tuple] = []  # every launch tried (name, grid, block, shared): tests' sentinel


def _describe(code: str) -> str:
    if code == "p":
        return "a pointer (8 bytes)"
    kind = {"i": "an integer", "f": "a float", "b": "a bool", "s": "a struct"}[code[0]]
    return f"{kind} of {code[1:]} bytes"


class RawModule:
    def __init__(self, code: str, options=(), **kwargs):
        if kwargs:
            raise EmulationError(f"RawModule options {sorted(kwargs)} are not emulated")
        self._lib, self.names = build(code, options)

    def get_function(self, name: str) -> Function:
        if name not in self.names:
            raise EmulationError(f"no kernel {name!r} in the module (it has {self.names})")
        return Function(self._lib, name)


class _Device:
    def __init__(self, index=None):
        if index not in (None, 0):
            raise EmulationError(f"the emulator has one device (0), got {index!r}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    def __init__(self, ptr):
        self.ptr = ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_cupy() -> types.ModuleType:
    mod = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    cuda.Device, cuda.ExternalStream = _Device, _Stream
    mod.cuda = cuda
    mod.RawModule = RawModule
    mod.from_dlpack = EmuArray
    mod.__spiking_emulator__ = True
    return mod


def install(monkeypatch) -> None:
    """Route the CUDA wrappers to the emulator for one test (pytest ``monkeypatch``)."""
    from spiking.kernels import (
        common,
        cuda_egru,
        cuda_lif,
        cuda_lsm,
        cuda_ltc,
        cuda_wkv,
        dispatch,
        fused,
    )

    mod = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.setitem(sys.modules, "cupy.cuda", mod.cuda)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(common, "CUDA_DEVICE_TYPE", "cpu")
    monkeypatch.setitem(dispatch._AVAIL_CACHE, "cuda", None)  # "torch sees no CUDA device"
    for m in (cuda_egru, cuda_lif, cuda_lsm, cuda_ltc, cuda_wkv):  # modules built by real CuPy
        monkeypatch.setattr(m, "_MODULES", {})
    for op in ("lif_fwd", "lif_bwd", "li_fwd", "li_bwd"):  # the ops pick kernels by device type
        monkeypatch.setitem(fused.KERNELS, (op, "cpu"), fused.KERNELS[(op, "cuda")])
