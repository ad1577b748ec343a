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
