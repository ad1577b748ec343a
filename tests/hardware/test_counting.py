"""Counting: equality with NeuroBench's metrics on converted snnTorch stacks; hand counts."""

import pytest
import torch
from torch import nn

import spiking
from spiking.hardware.counting import count, normalize_op_counts
from spiking.models.recurrent import Recurrent


def _neurobench(net, x_btf):
    pytest.importorskip("snntorch")
    nb = pytest.importorskip("neurobench.benchmarks", reason="neurobench not installed")
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import (
        ActivationSparsity,
        MembraneUpdates,
        NeuronOperations,
        SynapticOperations,
    )
    from neurobench.models import SNNTorchModel

    data = torch.utils.data.TensorDataset(x_btf, torch.zeros(x_btf.shape[0]))
    loader = torch.utils.data.DataLoader(data, batch_size=x_btf.shape[0])
    bench = nb.Benchmark(SNNTorchModel(net), loader, [], [],
                         [[ParameterCount, Footprint, ConnectionSparsity],
                          [ActivationSparsity, SynapticOperations, MembraneUpdates,
                           NeuronOperations]])
    return bench.run(quiet=True)


def _snn_stack(conv: bool):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    if conv:
        layers = [nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 6, 30)]
    else:
        layers = [nn.Linear(20, 30, bias=False)]
    net = nn.Sequential(*layers, snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(30, 5), snn.Leaky(beta=0.8, init_hidden=True, output=True))
    lin = layers[-1]
    with torch.no_grad():
        lin.weight[:6] = 0          # 6 neurons without input: their membrane never changes
        lin.weight[:, :3] = 0
    return net


@pytest.mark.parametrize("conv", [False, True])
def test_equals_neurobench(conv):
    net = _snn_stack(conv)
    torch.manual_seed(1)
    shape = (3, 7, 2, 6, 6) if conv else (3, 7, 20)
    x = (torch.rand(shape) < 0.3).float() * (2.0 if conv else 1.0)   # conv: MACs, else ACs
    x[:, 2] = 0                                                     # a silent step
    ref = _neurobench(net, x)
    from spiking.interop import from_snntorch

    ours = from_snntorch(net)
    c = count(ours, x.transpose(0, 1).contiguous()).neurobench()
    assert c["ParameterCount"] == ref["ParameterCount"]
    assert round(c["ConnectionSparsity"], 4) == ref["ConnectionSparsity"]
    assert c["ActivationSparsity"] == pytest.approx(ref["ActivationSparsity"], abs=1e-12)
    for key in ("Effective_MACs", "Effective_ACs", "Dense"):
        assert c["SynapticOperations"][key] == pytest.approx(
            ref["SynapticOperations"][key], rel=1e-12), key
    assert c["MembraneUpdates"] == pytest.approx(ref["MembraneUpdates"], rel=1e-12)
    for key in ("Effective Neuron Ops", "Neuron Dense Ops"):
        assert c["NeuronOperations"][key] == pytest.approx(ref["NeuronOperations"][key],
                                                           rel=1e-12)
    # the footprint rule applied to our own module
    from neurobench.metrics.static import Footprint
    from neurobench.models import TorchModel

    assert c["Footprint"] == Footprint()(TorchModel(ours))
    if not conv:
        assert c["MembraneUpdates"] < 35 * 7      # some membranes did not change


def test_hand_counts_linear_lif():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    model = spiking.Sequential(lin, spiking.LIF(tau_mem=10e-3, threshold=1.0))
    x = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]],
                      [[1.0, 0.0, 1.0]]])                           # [T=4, B=1, 3]
    c = count(model, x)
    lin_c, lif_c = c.layers
    # dense: 4 steps x 3 inputs x 2 outputs; effective: each active input times its non-zero
    # out-degree (inputs 0 and 2: 1, input 1: 0) -> steps 1 + 1 + 0 + 2
    assert lin_c.dense == 24 and lin_c.effective_acs == 4 and lin_c.effective_macs == 0
    assert lin_c.weights == 6 and lin_c.zero_weights == 4
    # neuron 0, drive 1, 2, 0, 3, a = exp(-0.1) = 0.9048, threshold 1, spike if h > 1:
    # h = 1 (no spike, v = 1); 2.905 (spike, v = 1.905); 1.724 (spike, .724); 3.655 (spike)
    # neuron 1 has no input: v stays 0, so it counts only at the first step (NeuroBench rule)
    assert lif_c.spikes == 3
    assert lif_c.membrane_updates == 2 + 3 and lif_c.membrane_updates_dense == 8
    assert lif_c.neuron_ops == 5 * 4 and lif_c.neuron_ops_dense == 8 * 4   # LIF + reset: 4
    assert lif_c.activations == 8 and lif_c.nonzero_activations == 3
    assert lif_c.activation_sparsity == 5 / 8
    assert lif_c.state_reads == 8 and lif_c.state_writes == 8      # one state variable (v)
    assert c.parameters == 6 and c.total("weight_reads") == 4 and c.connection_sparsity == 4 / 6


def test_hand_counts_recurrent():
    torch.manual_seed(0)
    layer = Recurrent(spiking.LIF(threshold=0.5), hidden_size=3, input_size=2)
    with torch.no_grad():
        layer.input.weight.fill_(1.0)
        layer.recurrent.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0],
                                                   [1.0, 1.0, 0.0]]))
    x = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]])   # [T=3, B=1, 2]
    c = count(layer, x)
    rec = next(layer_c for layer_c in c.layers if layer_c.kind == "Recurrent")
    inp = next(layer_c for layer_c in c.layers if layer_c.name.endswith(".input"))
    with torch.no_grad():
        out, _ = layer(x)
    prev = torch.cat([torch.zeros(1, 1, 3), out[:-1]])
    outdeg = torch.tensor([1.0, 2.0, 0.0])                         # non-zeros per column
    assert rec.dense == 3 * 9
    assert rec.effective_acs == float((prev[:, 0] * outdeg).sum())
    assert inp.dense == 3 * 6 and inp.effective_acs == 3 * 1 + 0 + 3 * 2
    assert rec.spikes == float(out.sum()) and rec.membrane_updates_dense == 9
    assert rec.parameters == 9 and inp.parameters == 6


def test_model_with_own_op_counts():
    from spiking.models.lmu import LMU

    m = LMU(4, 8, 6, 10.0)
    x = torch.randn(5, 2, 4)
    c = count(m, x)
    expected = m.op_counts(5, 2)["dense_macs"] / 2
    assert c.total("effective_macs") == expected and c.total("dense") == expected
    assert not c.uncounted


def test_normalize_pairs_and_unknown_keys():
    d = normalize_op_counts({"recurrent_macs_dense": 100, "recurrent_macs_event": 10,
                             "input_macs_dense": 50, "neuron_ops": 7, "exp": 3})
    assert d["dense"] == 150 and d["effective_macs"] == 60 and d["neuron_ops"] == 7
    assert d["extra"] == {"exp": 3}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="time-first"):
        count(nn.Linear(2, 2), torch.zeros(2, 2))


# ---------------------------------------------------------------- every model in the package
_SPIKING = {"csnn", "rsnn", "egru", "lsm", "spikegpt", "spiking-lmuformer"}
_NO_NEURONS = {"lmu", "lmuformer"}      # real-valued memories, no neuron state to update


def _registry_names():
    from spiking.models.registry import available_models
    return available_models()


@pytest.mark.parametrize("name", _registry_names())
def test_every_registry_model_is_counted(name):
    from spiking.models.registry import get_model

    torch.manual_seed(0)
    shape = (2, 16, 16) if name == "csnn" else (24,)
    m = get_model(name, input_shape=shape, n_classes=4)
    x = 4 * (torch.rand(12, 2, *shape) < 0.4).float()   # strong drive: untrained nets spike
    c = count(m, x)
    tot = c.totals()
    assert tot["dense"] > 0
    assert 0 < tot["effective_macs"] + tot["effective_acs"] <= tot["dense"]
    # only SpikeGPT's token embedding is unused when it classifies real-valued inputs
    assert c.uncounted == (("lm.emb",) if name == "spikegpt" else ())
    if name not in _NO_NEURONS:
        assert tot["membrane_updates"] > 0 and tot["neuron_ops"] > 0
    if name in _SPIKING:
        assert tot["spikes"] > 0 and 0 < tot["activation_sparsity"] < 1
    else:
        assert tot["spikes"] == 0


def test_egru_counts_follow_its_events():
    from spiking.models.egru import EGRU

    torch.manual_seed(0)
    m = EGRU(12, 3, hidden=[16], threshold_init=0.05).eval()
    x = torch.rand(5, 2, 12)                            # real-valued input: MACs
    c = count(m, x)
    with torch.no_grad():
        act = m(x)[1]["egru0"]
    h, b = 16, 2
    dense = 5 * b * 3 * h * h + 5 * b * 3 * h * 12 + b * h * 3
    eff = 3 * h * int(act[:-1].sum()) + 3 * h * int((x != 0).sum()) + b * h * 3
    assert c.total("dense") == dense / b and c.total("effective_macs") == eff / b
    assert c.total("spikes") == float(act.sum()) / b > 0
    assert c.total("membrane_updates") == 5 * h


def test_lsm_counts_spike_fanout_and_binary_input_as_acs():
    from spiking.models.lsm import LSM

    torch.manual_seed(0)
    m = LSM(20, 2, 150, seed=0)
    x = (torch.rand(10, 3, 20) < 0.3).float()
    m.scale_to_rate(x, 0.1)
    c = count(m, x)
    s = m.reservoir(x)
    fan = (m.indptr[1:] - m.indptr[:-1]).double()
    rec = float((s.double().sum((0, 1)) * fan).sum())
    inp = float(((x.reshape(30, 20) != 0).double() @ (m.w_in != 0).sum(1).double()).sum())
    assert c.total("effective_acs") == (rec + inp) / 3
    assert c.total("spikes") == float(s.sum()) / 3
    readout = m.readout.in_features * m.readout.out_features
    assert c.total("dense") == (10 * 3 * (150 * 150 + 20 * 150) + 3 * readout) / 3


def test_lmuformer_counts_memory_convs_and_lifs():
    from spiking.kernels import lmu as KL
    from spiking.models.lmuformer import LMUFormer

    torch.manual_seed(0)
    m = LMUFormer(6, 3, dim=8, order=4, spiking=True)
    x = (torch.rand(7, 2, 6) < 0.5).float()               # binary spikes: ACs
    c = count(m, x)
    layers = {layer.name: layer for layer in c.layers}
    assert layers["LMUFormer"].dense == KL.op_counts(7, 2, 8, 4)["dense_macs"] / 2
    conv = layers["convs.0"]
    assert conv.dense == 7 * 3 * 6 * 8                  # T outputs x k taps x C_in x C_out
    # an input at step s reaches the causal outputs s .. s + k - 1 that exist (< T)
    taps = sum(float((x[s] != 0).sum()) * min(3, 7 - s) for s in range(7))
    assert conv.effective_acs == taps * 8 / 2 and conv.effective_macs == 0
    lifs = [layer for layer in c.layers if layer.kind == "LIF"]
    assert len(lifs) == len(m.acts) and all(layer.membrane_updates_dense > 0 for layer in lifs)
    assert c.uncounted == ()


def test_spikegpt_language_model_on_tokens():
    from spiking.kernels import wkv as KW
    from spiking.models import spikegpt as S

    torch.manual_seed(0)
    lm = S.build("tiny", vocab_size=11)
    idx = torch.randint(0, 11, (9, 2))
    c = count(lm, idx)
    layers = {layer.name: layer for layer in c.layers}
    cdim = lm.cfg.n_embd
    w = KW.op_counts(9, 2, cdim)
    assert layers["blocks.0"].neuron_ops == (w["dense_macs"] + w["exp"] + w["elementwise"]) / 2
    assert layers["blocks.0.key"].dense == 9 * cdim * cdim
    hid = lm.blocks[0]._last["hid"]                     # the counted run's hidden spikes
    assert layers["blocks.0.lif_hid"].spikes == float((hid != 0).sum()) / 2
    assert layers["blocks.0.ffn_value"].effective_acs == float((hid != 0).sum()) * cdim / 2
    assert c.uncounted == ()
    with pytest.raises(ValueError, match="integer tokens"):
        count(lm, idx.float())


def test_rsnn_recurrent_layers_are_counted():
    from spiking.models.rsnn import RSNN

    torch.manual_seed(0)
    m = RSNN(10, 3, hidden=(8,))
    x = 3 * (torch.rand(6, 2, 10) < 0.5).float()
    c = count(m, x)
    layers = {layer.name: layer for layer in c.layers}
    rec = layers["layers.0"]
    assert rec.dense == 6 * 8 * 8 and rec.membrane_updates_dense == 6 * 8
    assert "layers.0" not in c.uncounted


def test_cfc_updates_every_unit_every_step():
    from spiking.models.registry import get_model

    m = get_model("cfc", input_shape=(5,), n_classes=2)
    c = count(m, torch.randn(4, 3, 5))
    hidden = sum(layer.units for layer in m.layers)
    assert c.total("membrane_updates") == 4 * hidden


def test_normalize_acs_event_pairs():
    d = normalize_op_counts({"input_macs_dense": 80, "input_acs_event": 12,
                             "readout_macs_dense": 6, "events": 3})
    assert d["dense"] == 86 and d["effective_acs"] == 12 and d["effective_macs"] == 6
    assert d["spikes"] == 3
