import math

import pytest
import torch

import spiking
from spiking.kernels.dispatch import BackendUnavailable


@pytest.mark.parametrize("cls, kw, match", [
    (spiking.LIF, dict(tau_mem=-1e-3), r"tau_mem must be > 0 \(seconds\), got \[-0.001"),
    (spiking.LIF, dict(tau_mem=0.0), "tau_mem must be > 0"),
    (spiking.LIF, dict(dt=0.0), r"dt must be finite and > 0 \(seconds\), got 0.0"),
    (spiking.LIF, dict(dt=-1e-3), "dt must be finite and > 0"),
    (spiking.LIF, dict(threshold=math.nan), "threshold must be finite"),
    (spiking.LIF, dict(reset="sometimes"), "reset must be one of .* got 'sometimes'"),
    (spiking.LIF, dict(backend="tpu"), "backend must be one of .* got 'tpu'"),
    (spiking.LIF, dict(discretization="rk4"), "discretization must be one of"),
    (spiking.CubaLIF, dict(tau_syn=-5e-3), "tau_syn must be > 0"),
    (spiking.ALIF, dict(tau_adapt=-1.0), "tau_adapt must be > 0"),
    (spiking.ALIF, dict(adapt_jump=math.inf), "adapt_jump must be finite"),
    (spiking.LI, dict(tau_mem=-2e-3), "tau_mem must be > 0"),
    (spiking.LIF, dict(surrogate="nope"), "unknown surrogate 'nope'"),
    (spiking.LIF, dict(tau_mem=[1e-3, 2e-3], n_neurons=3), r"tau_mem has shape \(2,\), expected"),
])
def test_invalid_parameters_name_the_value(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


@pytest.mark.parametrize("cls", [spiking.LIF, spiking.CubaLIF, spiking.ALIF, spiking.LI])
def test_wrong_input_rank(cls):
    with pytest.raises(ValueError, match=r"rank >= 3 .* got shape \(4, 5\)"):
        cls()(torch.zeros(4, 5))


@pytest.mark.parametrize("cls", [spiking.LIF, spiking.CubaLIF, spiking.ALIF, spiking.LI])
def test_nan_input_rejected_when_check_finite(cls):
    x = torch.zeros(3, 2, 4)
    x[1, 0, 2] = math.nan
    with pytest.raises(ValueError, match="1 non-finite values"):
        cls(check_finite=True)(x)
    cls()(x)  # without check_finite the NaN simply propagates


def test_state_shape_mismatch():
    n = spiking.CubaLIF()
    with pytest.raises(ValueError, match=r"state.v has shape \(2, 3\), expected \(2, 4\)"):
        n(torch.zeros(5, 2, 4), spiking.LIFState(torch.zeros(2, 3), torch.zeros(2, 3)))


def test_integer_input_rejected():
    with pytest.raises(ValueError, match="floating tensor"):
        spiking.LIF()(torch.zeros(3, 2, 4, dtype=torch.int64))


def test_cuda_backend_on_cpu_tensor_raises_with_reason():
    with pytest.raises(BackendUnavailable, match="cuda"):
        spiking.LIF(backend="cuda")(torch.zeros(3, 2, 4))
