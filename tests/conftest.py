import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Shared data folder: $SPIKING_DATA, default <repo>/../shared/data."""
    return Path(os.environ.get("SPIKING_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    root = data_root()
    if not root.is_dir():
        msg = f"shared data folder {root} is absent (set SPIKING_DATA)"
        if os.environ.get("SPIKING_REQUIRE_DATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread_counts():
    """Run Python ``code`` in a fresh ``OMP_NUM_THREADS=1`` process (numba's default pool
    size) and return the words it prints; skips where numba has a single thread anyway."""
    import subprocess
    import sys

    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")

    def run(code: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**env, "OMP_NUM_THREADS": "1"})
        return out.stdout.split()
    return run


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.cuda), "emulated",
                        "emulated-reverse"])
def cuda_device(request, monkeypatch):
    """Device string for tests of the CUDA kernels: on a real GPU through CuPy ("cuda";
    skipped without one) and under the CPU emulator of tests/cuda_emu.py ("cpu:0": the same
    wrappers and .cu sources, compiled by g++; skipped without g++), once with blocks and
    threads run in index order and once in reverse, so that a missing barrier or a race
    between threads shows as a difference. An emulated test that launched no kernel fails:
    it would have compared the reference with itself."""
    import cuda_emu

    if request.param == "gpu":
        reason = cuda_emu.real_cuda_reason()
        if reason:
            pytest.skip(reason)
        yield "cuda"
        return
    reason = cuda_emu.unavailable()
    if reason:
        pytest.skip(reason)
    cuda_emu.install(monkeypatch)
    monkeypatch.setattr(cuda_emu, "order", "reverse" if request.param.endswith("reverse")
                        else "forward")
    before = len(cuda_emu.LAUNCHES)
    with cuda_emu.DeviceTracker():  # device mix-ups a GPU would refuse are errors here too
        yield cuda_emu.DEVICE
    assert len(cuda_emu.LAUNCHES) > before, "no kernel was launched under the CUDA emulator"
