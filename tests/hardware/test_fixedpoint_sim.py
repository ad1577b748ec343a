"""Fixed-point event-driven simulation of the SpiNNaker-like mapping vs the float model."""

import numpy as np
import pytest
import torch
from torch import nn

import spiking
from spiking.hardware import fixedpoint_sim as F
from spiking.hardware import spinnaker as S
from spiking.models.recurrent import Recurrent

KW = {"dt": 1.0, "discretization": "euler", "backend": "reference"}   # alpha = 1 - 1/tau


def _pow2(shape, g):
    w = 2.0 ** -torch.randint(0, 4, shape, generator=g).float()
    sign = torch.where(torch.rand(shape, generator=g) < 0.4, -1.0, 1.0)
    return w * sign * (torch.rand(shape, generator=g) < 0.7)


def _tiny(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = spiking.Sequential(
        nn.Linear(8, 6, bias=False), spiking.LIF(tau_mem=4.0, threshold=1.0, **KW),
        Recurrent(spiking.CubaLIF(tau_mem=2.0, tau_syn=2.0, threshold=0.5, reset="zero", **KW),
                  hidden_size=4, input_size=6))
    with torch.no_grad():
        m[0].weight.copy_(_pow2((6, 8), g))
        m[2].input.weight.copy_(_pow2((4, 6), g))
        m[2].recurrent.weight.copy_(_pow2((4, 4), g))
    x = (torch.rand(40, 1, 8, generator=g) < 0.5).float()
    return m, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_on_representable_network(seed):
    m, x = _tiny(seed)
    sim, ref, mp = F.from_model(m, x)
    assert set(sim) == {"input", "pop1", "pop2"} and ref["pop2"].any()
    for p in ("pop1", "pop2"):
        assert np.array_equal(sim[p], ref[p]), p
    # membranes of the first LIF layer (alpha 0.75): v_q / 2^F equals the float membrane while
    # the products fit F fractional bits (first steps), then differs by at most the rounding
    # accumulated through the decay, 2^-(F+1) / (1 - 0.75), plus float32 rounding
    neurons = {p: F.neuron_config(layer.neuron if isinstance(layer, Recurrent) else layer,
                                  mp.populations[p]) for p, layer in (("pop1", m[1]),
                                                                      ("pop2", m[2]))}
    _, v, frac = F.simulate(mp, neurons, {"input": ref["input"]}, 40, record_v=True)
    with torch.no_grad():
        _, _, traj = m[1](m[0](x), record=True)
    vf, vs = traj.v[:, 0].double().numpy(), v["pop1"] / 2.0 ** frac["pop1"]
    assert np.array_equal(vs[:4], vf[:4])
    assert np.abs(vs - vf).max() <= 2.0 ** -(frac["pop1"] + 1) / 0.25 + 1e-6


def test_hardware_timing_delays_each_layer_by_one_step():
    g = torch.Generator().manual_seed(3)
    m = spiking.Sequential(nn.Linear(8, 6, bias=False), spiking.LIF(tau_mem=4.0, **KW),
                           nn.Linear(6, 5, bias=False), spiking.LIF(tau_mem=4.0, **KW))
    with torch.no_grad():
        m[0].weight.copy_(_pow2((6, 8), g) * 2)
        m[2].weight.copy_(_pow2((5, 6), g) * 2)
    x = (torch.rand(30, 1, 8, generator=g) < 0.5).float()
    hw, ref, _ = F.from_model(m, x, timing="hardware")
    assert ref["pop3"].any()
    assert np.array_equal(hw["pop1"][1:], ref["pop1"][:-1]) and not hw["pop1"][0].any()
    assert np.array_equal(hw["pop3"][2:], ref["pop3"][:-2])


def test_coarse_weights_disagree_and_agreement_is_reported():
    torch.manual_seed(1)
    m = spiking.Sequential(nn.Linear(60, 80), spiking.LIF(tau_mem=10e-3, threshold=0.5,
                                                          backend="reference"))
    x = (torch.rand(50, 1, 60) < 0.2).float()
    sim16, ref, _ = F.from_model(m, x)
    sim4, _, _ = F.from_model(m, x, machine=S.Machine(weight_bits=4))
    a16, a4 = F.agreement(sim16, ref)["pop1"], F.agreement(sim4, ref)["pop1"]
    assert ref["pop1"].any() and a4["entries"] < 1.0 and a4["entries"] <= a16["entries"]
    assert 0 <= a4["trains"] <= a4["entries"] <= 1


def test_router_reaches_every_target_core_and_validation():
    m, x = _tiny()
    pops, projs, _ = S.network_from_model(m, x)
    mp = S.map_network(pops, projs, S.Machine(neurons_per_core=2, cores_per_chip=3))
    r = F.router(mp)
    core_of = {p: mp.core_of(p) for p in pops}
    for pr in projs:
        for j in range(pr.n_pre):
            key = next(s.key for s in mp.slices if s.population == pr.pre
                       and s.start <= j < s.stop)
            assert set(core_of[pr.post][pr.post_idx[pr.pre_idx == j]].tolist()) <= r[key]
    with pytest.raises(ValueError, match="binary input"):
        F.from_model(m, x * 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        F.simulate(mp, {}, {"input": np.zeros((3, 8), bool)})


def test_conv_unrolled_into_synapses_runs_exactly():
    g = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    m = spiking.Sequential(conv, spiking.LIF(tau_mem=4.0, threshold=1.0, **KW), nn.Flatten(),
                           nn.Linear(3 * 4 * 4, 5, bias=False), spiking.LIF(tau_mem=2.0, **KW))
    with torch.no_grad():
        conv.weight.copy_(_pow2(conv.weight.shape, g) * 2)
        conv.bias.copy_(torch.tensor([0.25, -0.5, 0.0]))
        m[3].weight.copy_(_pow2((5, 48), g) * 2)
    x = (torch.rand(30, 1, 2, 7, 7, generator=g) < 0.4).float()
    pops, projs, _ = S.network_from_model(m, x)
    assert pops == {"input": 98, "pop1": 48, "pop4": 5}
    conv_p = projs[0]                  # dense equivalent of the unrolled synapses = the conv
    dense = np.zeros((48, 98))
    np.add.at(dense, (conv_p.post_idx, conv_p.pre_idx), conv_p.weight)
    xs = x[0, 0]
    ref = torch.nn.functional.conv2d(xs[None], conv.weight, None, 2, 1).flatten().double()
    assert np.allclose(dense @ xs.flatten().double().numpy(), ref.detach().numpy())
    sim, spikes, _ = F.from_model(m, x)
    assert spikes["pop1"].any() and spikes["pop4"].any()
    for p in ("pop1", "pop4"):
        assert np.array_equal(sim[p], spikes[p]), p
    with pytest.raises(TypeError, match="groups=1"):
        S.unroll_conv(nn.Conv2d(2, 2, 3, groups=2), (2, 5, 5))
    pooled = spiking.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), spiking.LIF(**KW))
    with pytest.raises(TypeError, match="MaxPool2d.*pooling"):
        S.network_from_model(pooled, x)


@pytest.mark.parametrize("seed,spacing", [(0, 2), (1, 2), (0, 9)])
def test_delayed_synapses_exact_in_model_timing(seed, spacing):
    # a DelayedLinear (RSNN synaptic delays) maps to synapses with delays 1 + (K-1-k) d; in
    # model timing they arrive (K-1-k) d steps later, as the float stack computes, and the
    # bias is added every step. Spacing 9 gives a 19-step delay: routed through the source
    # slices' delay-extension cores (tables only), still exact
    from spiking.models.delays import DelayedLinear, projection

    g = torch.Generator().manual_seed(seed)
    conv = projection(8, 6, 3, spacing)
    m = spiking.Sequential(DelayedLinear(conv), spiking.LIF(tau_mem=4.0, threshold=1.0, **KW),
                           nn.Linear(6, 4, bias=False), spiking.LIF(tau_mem=2.0, **KW))
    with torch.no_grad():
        conv.weight.copy_(_pow2((6, 8, 3), g))
        conv.bias.copy_(2.0 ** -torch.randint(2, 5, (6,), generator=g).float())
        m[2].weight.copy_(_pow2((4, 6), g) * 2)
    x = (torch.rand(40, 1, 8, generator=g) < 0.4).float()
    sim, ref, mp = F.from_model(m, x)
    proj = next(p for p in mp.projections if p.pre == "input")
    assert sorted(set(proj.delay.tolist())) == [1, 1 + spacing, 1 + 2 * spacing]
    assert mp.n_delay_cores == (1 if spacing == 9 else 0)
    assert ref["pop1"].any() and ref["pop3"].any()
    for p in ("pop1", "pop3"):
        assert np.array_equal(sim[p], ref[p]), p
