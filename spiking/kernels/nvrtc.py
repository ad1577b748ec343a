"""Compile-check of the ``.cu`` sources with NVRTC called directly through ctypes.

Machines without a GPU (CI, laptops) cannot run the CUDA kernels, but they can still compile
them: ``libnvrtc`` is a plain shared library (pip wheel ``nvidia-cuda-nvrtc``) that needs no
driver. :func:`compile_source` compiles one file for one architecture with the same options
as the run-time loader (:mod:`spiking.kernels.cuda_lif`) and returns the compile log.

The NVRTC C API used (``nvrtcCreateProgram``, ``nvrtcCompileProgram``, ``nvrtcGetProgramLog``,
``nvrtcGetCUBINSize``, ``nvrtcDestroyProgram``, ``nvrtcVersion``) is documented in the NVRTC
user guide, https://docs.nvidia.com/cuda/nvrtc/.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CUDA_DIR = Path(__file__).with_name("cuda")
# Shared with the run-time loader: C++17, and no multiply-add contraction so that each product
# and sum rounds as in the elementwise torch reference (NVRTC's default is --fmad=true).
OPTIONS = ("--std=c++17", "--fmad=false")
ARCHS = ("sm_80", "sm_90")  # A100, H100


@dataclass(frozen=True)
class CompileResult:
    ok: bool
    log: str
    arch: str
    binary_bytes: int
    ptx: str = ""  # the PTX text when compiled for a virtual arch (compute_XX)


def find_libnvrtc() -> Path | None:
    """Path of libnvrtc: $SPIKING_NVRTC, the nvidia-cuda-nvrtc wheel, or CUDA_HOME; else None."""
    env = os.environ.get("SPIKING_NVRTC")
    if env and Path(env).is_file():
        return Path(env)
    roots = [Path(p) / "nvidia" for p in sys.path if p and Path(p, "nvidia").is_dir()]
    roots += [Path(os.environ[k]) for k in ("CUDA_HOME", "CUDA_PATH") if k in os.environ]
    for root in roots:
        hits = sorted(h for h in glob.glob(str(root / "**" / "lib*" / "libnvrtc.so*"),
                                           recursive=True) if ".alt." not in h)
        if hits:
            return Path(hits[-1])
    return None


_LIB = None


def load() -> ctypes.CDLL:
    """Load libnvrtc (its builtins library first, RTLD_GLOBAL, so NVRTC finds it)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    path = find_libnvrtc()
    if path is None:
        raise OSError("libnvrtc not found: pip install nvidia-cuda-nvrtc (or set SPIKING_NVRTC "
                      "to the library path)")
    for b in sorted(glob.glob(str(path.parent / "libnvrtc-builtins.so*"))):
        if ".alt." not in b:
            ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
            break
    lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    _LIB = lib
    return lib


def version() -> tuple[int, int]:
    lib = load()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def status() -> tuple[bool, str]:
    """(True, "NVRTC major.minor at PATH") if .cu sources can be compiled here, else
    (False, why not)."""
    try:
        major, minor = version()
    except OSError as e:
        return False, str(e)
    return True, f"NVRTC {major}.{minor} at {find_libnvrtc()}"


def _check(lib, code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"{what} failed: {lib.nvrtcGetErrorString(code).decode()}")


def compile_source(path: str | Path, arch: str = "sm_90",
                   options: tuple[str, ...] = OPTIONS) -> CompileResult:
    """Compile one ``.cu`` file (its folder on the include path) for ``arch``: ``sm_XX`` gives
    a CUBIN (size in ``binary_bytes``), ``compute_XX`` the PTX text (``ptx``)."""
    lib = load()
    path = Path(path)
    src = path.read_bytes()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), src, path.name.encode(), 0, None,
                                       None), "nvrtcCreateProgram")
    try:
        opts = [*options, f"--gpu-architecture={arch}", f"--include-path={path.parent}"]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        code = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLog")
        buf = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.value.decode(errors="replace")
        nbytes, ptx_text = 0, ""
        if code == 0:
            kind = "PTX" if arch.startswith("compute_") else "CUBIN"
            out = ctypes.c_size_t()
            _check(lib, getattr(lib, f"nvrtcGet{kind}Size")(prog, ctypes.byref(out)), kind)
            nbytes = out.value
            if kind == "PTX":
                buf = ctypes.create_string_buffer(out.value)
                _check(lib, lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
                ptx_text = buf.value.decode(errors="replace")
        else:
            log = f"{lib.nvrtcGetErrorString(code).decode()}\n{log}"
        return CompileResult(code == 0, log, arch, nbytes, ptx_text)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def sources() -> list[Path]:
    """Every ``.cu`` file of the package."""
    return sorted(CUDA_DIR.glob("*.cu"))


def main() -> int:
    """``python -m spiking.kernels.nvrtc``: compile every .cu for every arch, print the logs."""
    bad = 0
    print(f"NVRTC {'.'.join(map(str, version()))} from {find_libnvrtc()}")
    for src in sources():
        for arch in ARCHS:
            r = compile_source(src, arch)
            bad += not r.ok
            print(f"{src.name} {arch}: {'ok' if r.ok else 'FAILED'} ({r.binary_bytes} B)")
            if r.log.strip():
                print(r.log)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
