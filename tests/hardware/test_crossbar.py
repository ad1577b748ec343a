"""Memristive crossbars: ideal mapping is exact, noise is seeded and grows, stuck-at rates,
levels, drift, and the energy arithmetic by hand."""

import itertools
import math

import pytest
import torch
from torch import nn

import spiking
from spiking.hardware import counting
from spiking.hardware import crossbar as C
from spiking.models.recurrent import Recurrent

IDEAL_IO = C.Geometry(adc_bits=None, dac_bits=None, rows=64, cols=32)


def _snn(seed=0):
    torch.manual_seed(seed)
    return spiking.Sequential(
        nn.Linear(300, 120), spiking.LIF(threshold=0.3, backend="reference"),
        Recurrent(spiking.LIF(threshold=0.3, backend="reference"), hidden_size=40, input_size=120, autapses=False),
        nn.Linear(40, 10))


def test_ideal_device_equals_float_model():
    m = _snn()
    x = (torch.rand(25, 4, 300, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    w = C.wrap(m, C.Device(), IDEAL_IO, seed=3)
    assert len(C.layers(w)) == 4 and not C.layers(m)          # a copy, the original untouched
    assert torch.equal(w(x)[0], m(x)[0])
    lin = nn.Linear(70, 9)                                     # graded inputs, bias
    xg = torch.randn(5, 3, 70)
    assert torch.equal(C.wrap(lin, C.Device(), IDEAL_IO)(xg), lin(xg))
    # the recurrent matrix really runs on the crossbar: perturb it and the output changes
    w2 = C.wrap(m, C.Device(), IDEAL_IO)
    w2[2].recurrent._w_eff.mul_(-1)
    assert not torch.equal(w2(x)[0], m(x)[0])


def test_wrapped_model_counts_like_the_original():
    m = _snn()
    x = (torch.rand(10, 2, 300, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    a = counting.count(m, x).totals()
    b = counting.count(C.wrap(m, C.Device(), IDEAL_IO), x).totals()
    assert a == b


def _rel_err(dev, seed=0, geo=IDEAL_IO):
    torch.manual_seed(0)
    lin = nn.Linear(200, 100)
    x = torch.randn(1, 64, 200)
    y = C.wrap(lin, dev, geo, seed=seed)(x)
    with torch.no_grad():
        return float((y - lin(x)).norm() / lin(x).norm()), y


def test_noise_is_seeded_and_error_grows_with_noise():
    dev = C.Device(prog_noise=0.02, read_noise=0.05)
    _, y1 = _rel_err(dev, seed=5)
    _, y2 = _rel_err(dev, seed=5)
    _, y3 = _rel_err(dev, seed=6)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    for key in ("read_noise", "prog_noise"):
        errs = [_rel_err(C.Device(**{key: s}))[0] for s in (0.0, 0.01, 0.03, 0.1)]
        assert errs[0] < 1e-6 and all(a < b for a, b in itertools.pairwise(errs)), (key, errs)


def test_read_noise_statistics():
    # one input row of ones: std of the output = read_noise / k * sqrt(sum_i G+^2 + G-^2)
    dev = C.Device(read_noise=0.1)
    lin = nn.Linear(50, 1, bias=False)
    layer = C.wrap(lin, dev, IDEAL_IO, seed=1)
    x = torch.ones(20000, 50, dtype=torch.float64)
    y = layer(x).squeeze(1)
    g = layer.conductances
    std = 0.1 / layer.programmed.scale * math.sqrt(float((g ** 2).sum()))
    assert float(y.std()) == pytest.approx(std, rel=0.03)
    assert float(y.mean()) == pytest.approx(float(lin.weight.detach().double().sum()), abs=4 * std / 141)


def test_stuck_at_rates_and_values():
    dev = C.Device(p_sa0=0.02, p_sa1=0.09)
    p = C.program(torch.randn(300, 400), dev, torch.Generator().manual_seed(0))
    n = p.stuck.numel()
    for code, rate, g in ((1, 0.02, dev.g_min), (2, 0.09, dev.g_max)):
        hit = p.stuck == code
        sigma = math.sqrt(rate * (1 - rate) / n)
        assert abs(float(hit.double().mean()) - rate) < 4 * sigma
        both = torch.stack([p.g_pos, p.g_neg])
        assert bool((both[hit] == g).all())


def test_levels_and_drift():
    dev = C.Device(levels=5)
    p = C.program(torch.randn(30, 40), dev, torch.Generator().manual_seed(0))
    q = (dev.g_max - dev.g_min) / 4
    k = (torch.stack([p.g_pos, p.g_neg]) - dev.g_min) / q
    assert torch.allclose(k, k.round(), atol=1e-9) and k.round().unique().numel() <= 5
    d = C.Device(drift_nu=0.05, t_read=100.0, drift_t0=1.0)
    p = C.program(torch.randn(4, 5), d, torch.Generator().manual_seed(0))
    g = C.read_conductances(p, d)
    assert torch.allclose(g, torch.stack([p.g_pos, p.g_neg]) * 100 ** -0.05, rtol=1e-12)


def test_energy_and_latency_by_hand():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.5, 0.0], [0.25, 1.0, -1.0]]))
    dev = C.Device(g_min=1e-6, g_max=2e-6, v_read=0.2, t_pulse=10e-9)
    geo = C.Geometry(rows=2, cols=2, adc_bits=None, dac_bits=8, e_adc=1e-12, e_dac=0.5e-12,
                     adcs_per_array=1, t_adc=5e-9)
    w = C.wrap(lin, dev, geo)
    x = torch.tensor([[[1.0, 0.0, 1.0]]])                   # T = 1, B = 1
    rep = C.measure(w, x)
    assert w(x).tolist() == [[[1.0, -0.75]]]
    st = rep.layers[""]
    # row tiles {0, 1} and {2}, column tiles {out 0} and {out 1}; rows 0 and 2 driven
    assert st["cell_reads"] == 8 and st["dac"] == 4 and st["adc"] == 4
    # G+ row 0: 2, 1.25 uS; G- row 0: 1, 1 uS; row 2: G+ 1, 1; G- 1, 2 (uS)
    e_array = 10e-9 * 0.2 ** 2 * (5.25e-6 + 5e-6)
    assert st["e_array_j"] == pytest.approx(e_array, rel=1e-12)
    assert rep.energy_j == pytest.approx(e_array + 4e-12 + 4 * 0.5e-12, rel=1e-12)
    assert rep.latency_s == pytest.approx(10e-9 + 5e-9)
    # a 2-bit ADC (levels -fs, 0, fs) per row tile: (1, 0.25) -> (1, 0); (0, -1) -> (0, -1)
    w2 = C.wrap(lin, dev, C.Geometry(rows=2, cols=2, adc_bits=2, dac_bits=None))
    assert w2(x).tolist() == [[[1.0, -1.0]]]
    silent = C.measure(w, torch.zeros(4, 1, 3))
    assert silent.energy_j == 0 and silent.latency_s == 0


def test_tiles_cover_the_layer():
    lin = nn.Linear(70, 40)
    layer = C.wrap(lin, C.Device(), C.Geometry(rows=32, cols=16))
    tiles = layer.tiles("fc")
    assert len(tiles) == 3 * 5 and tiles["fc.r2c4"].shape == (2, 6, 0 + 8)
    g = torch.as_tensor(tiles["fc.r0c0"])
    assert torch.allclose((g[0] - g[1]) / layer.programmed.scale, lin.weight.detach().T[:32, :8]
                          .double(), atol=1e-6)


def test_load_device_and_validation(tmp_path):
    dev, geo = C.load_device("rram")
    assert dev.g_max == pytest.approx(40e-6) and geo.rows == 256 and dev.levels == 16
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nsource = "s"\n[values]\ne_synop_pj = 1\n[crossbar]\ng_max = 1\n')
    with pytest.raises(ValueError, match="'g_max' unknown"):
        C.load_device(bad)
    with pytest.raises(ValueError, match="g_min < g_max"):
        C.Device(g_min=2e-6, g_max=1e-6)
    with pytest.raises(ValueError, match="p_sa0 \\+ p_sa1"):
        C.Device(p_sa0=0.6, p_sa1=0.6)
    with pytest.raises(ValueError, match="even cols"):
        C.Geometry(cols=3)
    with pytest.raises(ValueError, match="no CrossbarLinear"):
        C.report(nn.Linear(2, 2), 1)
