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
