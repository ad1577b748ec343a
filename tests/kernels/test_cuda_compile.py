"""Every .cu source compiles with NVRTC (libnvrtc via ctypes), no GPU needed."""

import re

import pytest

from spiking.kernels import nvrtc

if nvrtc.find_libnvrtc() is None:
    pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc): cannot compile-check the "
                ".cu sources", allow_module_level=True)

SOURCES = nvrtc.sources()


def test_sources_exist():
    names = {p.name for p in SOURCES}
    assert {"lif.cu", "li.cu"} <= names, names


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_cu_compiles(src, arch):
    r = nvrtc.compile_source(src, arch)
    print(f"{src.name} {arch}: {r.binary_bytes} B\n{r.log}")
    assert r.ok, r.log
    assert r.binary_bytes > 0


def test_compile_errors_are_reported(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n')
    r = nvrtc.compile_source(bad, "sm_90")
    assert not r.ok and "undefined_name" in r.log


@pytest.mark.parametrize("src, kernels", [
    ("lif.cu", [f"lif_{d}_{s}" for d in ("fwd", "bwd") for s in ("f32", "f64", "f16", "bf16")]),
    ("li.cu", [f"li_{d}_{s}" for d in ("fwd", "bwd") for s in ("f32", "f64", "f16", "bf16")]),
])
def test_every_dtype_is_instantiated_and_forward_has_no_fma(src, kernels):
    # --fmad=false: the forward must round every product and sum like the elementwise
    # reference, so its PTX holds no fused multiply-add (the backward's math library may).
    r = nvrtc.compile_source(nvrtc.CUDA_DIR / src, "compute_90")
    assert r.ok, r.log
    entries = dict(re.findall(r"\.entry (\w+)\((.*?)(?=\.entry|\Z)", r.ptx, flags=re.DOTALL))
    assert sorted(entries) == sorted(kernels)
    for name, body in entries.items():
        if "_fwd_" in name:
            assert "fma.rn" not in body, f"{name} contains FMA instructions"
