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
