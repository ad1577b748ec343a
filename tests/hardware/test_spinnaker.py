"""SpiNNaker-like mapping invariants, quantisation and the execution profile."""

import numpy as np
import pytest
import torch
from torch import nn

import spiking
from spiking.hardware import spinnaker as S
from spiking.models.recurrent import Recurrent


def _random_net(seed=0):
    rng = np.random.default_rng(seed)
    pops = {"a": 700, "b": 300}
    projs = []
    for name, pre, post, n_pre, n_post, p in (("ab", "a", "b", 700, 300, 0.05),
                                              ("bb", "b", "b", 300, 300, 0.1)):
        mask = rng.random((n_pre, n_post)) < p
        pre_i, post_i = np.nonzero(mask)
        projs.append(S.Projection(name, pre, post, n_pre, n_post, pre_i, post_i,
                                  rng.normal(size=pre_i.size), np.ones(pre_i.size, np.int16)))
    return pops, projs


def test_mapping_invariants():
    pops, projs = _random_net()
    mach = S.Machine(cores_per_chip=4, neurons_per_core=128, synapse_bytes_per_core=4 * 2000,
                     routing_entries=64)
    m = S.map_network(pops, projs, mach)
    for pop, n in pops.items():       # each neuron on exactly one core
        owners = np.zeros(n, dtype=int)
        for s in m.slices:
            if s.population == pop:
                owners[s.start:s.stop] += 1
        assert (owners == 1).all()
    fan_in = {p: np.zeros(n, int) for p, n in pops.items()}
    for pr in projs:
        np.add.at(fan_in[pr.post], pr.post_idx, 1)
    for s in m.slices:                # no limit exceeded
        assert s.stop - s.start <= mach.neurons_per_core
        assert fan_in[s.population][s.start:s.stop].sum() * 4 <= mach.synapse_bytes_per_core
        assert s.core < mach.cores_per_chip
    assert all(len(e) <= mach.routing_entries for e in m.tables.values())
    core_of = {p: m.core_of(p) for p in pops}
    rng = np.random.default_rng(1)
    for pr in projs:                  # every spike reaches every target core via the tables
        for j in rng.choice(pr.n_pre, 40, replace=False):
            needed = set(core_of[pr.post][pr.post_idx[pr.pre_idx == j]].tolist())
            assert needed <= S.route(m, pr.pre, int(j))


def test_too_many_synapses_for_one_neuron_is_an_error():
    pops, projs = _random_net()
    with pytest.raises(ValueError, match="more than a core holds"):
        S.map_network(pops, projs, S.Machine(synapse_bytes_per_core=40))


def test_quantise_counts_zeroed_and_saturated():
    q = S.quantise(np.array([1.0, -0.5, 1e-9, 0.0, 0.25]), bits=8)
    # max |w| = 1 -> f = floor(log2(127/1)) = 6; 1e-9 rounds to 0
    assert q.frac_bits == 6 and q.zeroed == 1 and q.saturated == 0
    assert q.weight_fixed.tolist() == [64, -32, 0, 0, 16]


def test_execution_profile_counts_by_hand():
    pops = {"in": 2, "out": 2}
    pr = S.Projection("p", "in", "out", 2, 2, np.array([0, 0, 1]), np.array([0, 1, 1]),
                      np.array([1.0, 1.0, 1.0]), np.ones(3, np.int16))
    mach = S.Machine(neurons_per_core=1, cores_per_chip=2)
    m = S.map_network(pops, [pr], mach)      # cores: in0, in1 (chip 0), out0, out1 (chip 1)
    spikes = {"in": np.array([[1, 0], [1, 1], [0, 0]], bool)}
    prof = S.execution_profile(m, spikes)
    assert prof.synaptic_events[:, 2].tolist() == [1, 1, 0]          # out0: from in0 only
    assert prof.synaptic_events[:, 3].tolist() == [1, 2, 0]          # out1: in0 and in1
    assert prof.packets_sent[:, 0].tolist() == [1, 1, 0]
    assert prof.packets_received[:, 3].tolist() == [1, 2, 0]
    assert prof.neuron_updates.sum() == 3 * 4
    assert prof.real_time
    e = prof.energy_j
    assert e["synaptic events"] == pytest.approx(5 * mach.e_synaptic_event_j)
    assert e["packets"] == pytest.approx(3 * mach.e_packet_j)        # 3 spikes sent


def test_network_from_model_and_profile():
    torch.manual_seed(0)
    model = spiking.Sequential(nn.Linear(10, 20), spiking.LIF(threshold=0.3),
                               Recurrent(spiking.LIF(threshold=0.3), hidden_size=8,
                                         input_size=20))
    x = (torch.rand(15, 1, 10) < 0.5).float()
    pops, projs, spikes = S.network_from_model(model, x)
    assert pops == {"input": 10, "pop1": 20, "pop2": 8}
    assert {p.name.split(":")[1] for p in projs} == {"0", "input", "recurrent"}
    m = S.map_network(pops, projs)
    prof = S.execution_profile(m, spikes)
    assert prof.synaptic_events.sum() > 0 and prof.total_energy_j > 0


def _dense(pr):
    d = np.zeros((pr.n_post, pr.n_pre))
    np.add.at(d, (pr.post_idx, pr.pre_idx), pr.weight)
    return d


def test_unroll_pool_equals_the_pooling():
    from spiking.pooling import SumPool2d

    x = torch.rand(2, 7, 7, dtype=torch.float64)
    for layer in (nn.AvgPool2d(2), nn.AvgPool2d(3, 2, 1), SumPool2d(2, padding=1),
                  nn.AvgPool2d(3, 2, 1, count_include_pad=False)):
        pre, post, w, shape = S.unroll_pool(layer, (2, 7, 7))
        ref = layer(x[None])[0]
        assert shape == tuple(ref.shape)
        d = np.zeros((int(np.prod(shape)), 98))
        np.add.at(d, (post, pre), w)
        assert np.allclose(d @ x.flatten().numpy(), ref.flatten().numpy()), layer
    with pytest.raises(TypeError, match="max pooling"):
        S.unroll_pool(nn.MaxPool2d(2), (2, 7, 7))


def test_pooled_network_maps_with_composed_projections():
    from spiking.models.csnn import CSNN
    from spiking.pooling import SumPool2d

    torch.manual_seed(0)
    conv, lin = nn.Conv2d(2, 3, 3), nn.Linear(3 * 2 * 2, 5)
    model = spiking.Sequential(conv, nn.AvgPool2d(2), spiking.LIF(threshold=0.1),
                               SumPool2d(2), nn.Flatten(), lin, spiking.LIF(threshold=0.1))
    x = (torch.rand(12, 2, 2, 10, 10) < 0.5).float()
    pops, projs, spikes = S.network_from_model(model, x)
    assert pops == {"input": 200, "pop2": 48, "pop6": 5}
    assert [p.name for p in projs] == ["input->pop2:0+1", "pop2->pop6:3+5"]
    # the composed synapses are conv then average pool (no bias), and sum pool then Linear
    xi = x[0, 0].double()
    with torch.no_grad():
        ref1 = nn.functional.avg_pool2d(nn.functional.conv2d(xi[None], conv.weight.double()), 2)
        s = torch.rand(3, 4, 4, dtype=torch.float64)
        ref2 = lin.weight.double() @ nn.functional.avg_pool2d(s[None], 2,
                                                              divisor_override=1).flatten()
    assert np.allclose(_dense(projs[0]) @ xi.flatten().numpy(), ref1.flatten().numpy())
    assert np.allclose(_dense(projs[1]) @ s.flatten().numpy(), ref2.numpy())
    assert projs[0].pre_idx.size == 48 * 2 * 4 * 4           # 3x3 conv + 2x2 pool: 4x4 taps
    assert spikes["pop2"].any() and spikes["pop6"].any()
    mach = S.Machine(cores_per_chip=3, neurons_per_core=16, synapse_bytes_per_core=4 * 400)
    m = S.map_network(pops, projs, mach)
    for pop, n in pops.items():       # each neuron on exactly one core, within the limits
        owners = np.zeros(n, dtype=int)
        for sl in m.slices:
            if sl.population == pop:
                owners[sl.start:sl.stop] += 1
                assert sl.stop - sl.start <= 16 and sl.core < 3
        assert (owners == 1).all()
    core_of = {p: m.core_of(p) for p in pops}
    for pr in projs:                  # spikes reach every core holding a target
        for j in range(0, pr.n_pre, 7):
            needed = set(core_of[pr.post][pr.post_idx[pr.pre_idx == j]].tolist())
            assert needed <= S.route(m, pr.pre, int(j))
    assert S.execution_profile(m, spikes).synaptic_events.sum() > 0
    # a CSNN is mapped through to_sequential(); max pooling is a clear error
    xc = (torch.rand(3, 1, 2, 34, 34) < 0.3).float()
    pops, projs, _ = S.network_from_model(CSNN(channels=(2, 4), pool_kind="sum"), xc)
    assert pops == {"input": 2312, "pop2": 450, "pop5": 100, "pop8": 10}
    with pytest.raises(TypeError, match="no mapping"):
        S.network_from_model(CSNN(channels=(2, 4)), xc)
    from spiking.hardware import fixedpoint_sim as F
    with pytest.raises(TypeError, match="does not support pooling"):
        F.from_model(model, x[:, :1])


def test_delays_over_the_core_limit_take_delay_extension_cores(tmp_path):
    # sPyNNaker-like: a neuron core delivers delays <= 16 steps; a longer delay D is re-sent by
    # a delay-extension core of its source slice at stage (D - 1) // 16, i.e. 16 s steps later
    from spiking.hardware.weightmap import read_weightmap, write_weightmap

    mach = S.Machine(neurons_per_core=2, cores_per_chip=4)
    pre = np.array([0, 1, 1, 2, 3])
    post = np.array([0, 0, 1, 1, 0])
    delay = np.array([16, 17, 40, 3, 32], np.int16)     # stages -, 1, 2, -, 1
    pr = S.Projection("p", "in", "out", 4, 2, pre, post, np.ones(5), delay)
    m = S.map_network({"in": 4, "out": 2}, [pr], mach)
    assert m.n_cores == 3 and m.n_delay_cores == 2          # in[0:2], in[2:4]: both have long ones
    a, b = m.delay_extensions
    assert (a.source, b.source) == (0, 1) and (a.chip, a.core, b.chip, b.core) == (0, 3, 1, 0)
    assert m.n_chips == 2
    # routing: a source slice's entry lists its short-delay targets and its delay core; the
    # delay core (global core 3 / 4, key core << key_shift) has entries to the long targets
    k = mach.key_shift
    assert {c: sorted((key >> k, t) for key, _, t in e) for c, e in m.tables.items()} == {
        0: [(0, (2, 3)), (1, (2,)), (3, (2,)), (4, (2,))], 1: [(1, (4,))]}
    assert S.route(m, "in", 1) == S.route(m, "in", 3) == {2}
    only_long = S.map_network({"in": 1, "out": 1}, [S.Projection(
        "q", "in", "out", 1, 1, np.array([0]), np.array([0]), np.ones(1), np.array([20]))])
    assert only_long.tables == {0: [(0, 0xFFFFF800, (2,)), (2 << 11, 0xFFFFF800, (1,))]}
    assert S.route(only_long, "in", 0) == {1}                # through the delay core only
    assert a.stages.tolist() == [[False, False], [True, True]]
    assert b.stages.tolist() == [[False], [True]]
    t = 50
    spikes = {"in": np.zeros((t, 4), bool), "out": np.zeros((t, 2), bool)}
    spikes["in"][[0, 5], 1] = True                          # neuron 1: stages 1 and 2
    spikes["in"][2, 3] = True                               # neuron 3: stage 1
    spikes["in"][4, 0] = True                               # neuron 0: no long delay
    prof = S.execution_profile(m, spikes)
    sent = prof.delay_cores["sent"]
    assert sent[:, 0].sum() == 4 and sent[[16, 21, 32, 37], 0].tolist() == [1, 1, 1, 1]
    assert sent[:, 1].sum() == 1 and sent[18, 1] == 1
    assert prof.delay_cores["received"][:, 0].sum() == 3
    assert np.all(prof.delay_cores["cycles"] == 128 * 2)
    base = S.execution_profile(S.map_network({"in": 4, "out": 2}, [pr], S.Machine(
        neurons_per_core=2, cores_per_chip=4, max_delay_steps=64)), spikes)
    assert not base.delay_cores and "delay-extension packets" not in base.energy_j
    assert prof.energy_j["delay-extension packets"] == pytest.approx(5 * mach.e_packet_j)
    assert prof.energy_j["idle"] == pytest.approx(base.energy_j["idle"] * 5 / 3)
    from spiking.hardware.report import _delay_cores
    assert _delay_cores(m) == " (+2 delay-extension cores for delays over 16 steps)"
    man = read_weightmap(write_weightmap(tmp_path / "wm", m))["manifest"]
    assert [d["neurons_per_stage"] for d in man["delay_extension_cores"]] == [[1, 1], [1]]
    assert [d["index"] for d in man["delay_extension_cores"]] == [3, 4]
    assert man["routing"]["entries"] == 5                     # 4 on chip 0, 1 on chip 1
