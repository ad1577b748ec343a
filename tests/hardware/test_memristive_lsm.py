"""Memristive LSM: device-drawn reservoir weights (statistics, seeding) through the LSM hook."""

import math

import pytest
import torch

from spiking.hardware import crossbar as C
from spiking.hardware.memristive_lsm import device_sampler

lsm = pytest.importorskip("spiking.models.lsm", reason="spiking.models.lsm (issue 6) not present")


def _draw(sampler, n=40000, seed=0):
    idx = torch.arange(n)
    return sampler(idx, idx, torch.Generator().manual_seed(seed))


def test_binary_stochastic_set_fraction_and_values():
    dev = C.Device(g_min=2e-6, g_max=40e-6)
    mag = _draw(device_sampler(dev, "binary", p_set=0.3))
    mean = 0.3 * 40e-6 + 0.7 * 2e-6
    lrs = torch.isclose(mag, torch.tensor(40e-6 / mean, dtype=torch.float64))
    hrs = torch.isclose(mag, torch.tensor(2e-6 / mean, dtype=torch.float64))
    assert bool((lrs | hrs).all())
    frac = float(lrs.double().mean())
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / mag.numel())


def test_analog_levels_noise_and_seed():
    dev = C.Device(g_min=0.0, g_max=1.0, levels=4)
    mag = _draw(device_sampler(dev, "analog"))
    # targets U(0, 1) on 4 levels {0, 1/3, 2/3, 1}; magnitudes G / 0.5
    assert set((mag * 0.5 * 3).round().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert torch.allclose(mag * 1.5, (mag * 1.5).round(), atol=1e-12)
    assert float(mag.mean()) == pytest.approx(1.0, abs=0.02)
    noisy = C.Device(g_min=1e-6, g_max=40e-6, prog_noise=0.05, read_noise=0.02)
    a, b = _draw(device_sampler(noisy), seed=3), _draw(device_sampler(noisy), seed=3)
    assert torch.equal(a, b) and not torch.equal(a, _draw(device_sampler(noisy), seed=4))
    with pytest.raises(ValueError, match="mode"):
        device_sampler(dev, "ternary")


def test_lsm_built_from_device():
    dev = C.Device(g_min=1e-6, g_max=40e-6, levels=8, prog_noise=0.02)
    kw = {"n_neurons": 60, "p_connect": 0.2, "seed": 1, "backend": "reference"}
    m = lsm.LSM(20, 3, weight_sampler=device_sampler(dev, "analog"), **kw)
    ref = lsm.LSM(20, 3, **kw)
    assert torch.equal(m.indices, ref.indices)            # same topology, device weights
    assert not torch.equal(m.weights, ref.weights)
    exc = m.exc[torch.repeat_interleave(torch.arange(60), m.indptr.diff())]
    assert bool((m.weights[exc] > 0).all()) and bool((m.weights[~exc] <= 0).all())
    x = (torch.rand(15, 4, 20, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    logits, act = m(x)
    assert logits.shape == (4, 3) and act["reservoir"].shape == (15, 4, 60)
