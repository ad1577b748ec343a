"""CSNN: shapes, recorded activity, readouts, errors, gradients, registry."""

import pytest
import torch

from spiking.models.csnn import CSNN
from spiking.models.readout import spikes_per_sample
from spiking.models.registry import get_model


def frames(t=3, b=2, size=34, p=0.2):
    return (torch.rand(t, b, 2, size, size) < p).float()


@pytest.mark.parametrize("readout", ["li", "count"])
def test_shapes_activity_and_gradients(readout):
    m = CSNN(channels=(4, 8), readout=readout, backend="reference", threshold=0.3)
    x = frames()
    logits, act = m(x)
    assert logits.shape == (2, 10)
    assert act["conv1"].shape == (3, 2, 4, 15, 15)
    assert act["conv2"].shape == (3, 2, 8, 5, 5)
    assert ("readout" in act) == (readout == "count")
    for s in act.values():
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    total = sum(s[:, 1].sum() for s in act.values())
    assert spikes_per_sample(act)[1] == total
    (logits.sum() + sum(s.sum() for s in act.values())).backward()
    assert m.conv1.weight.grad is not None and m.conv1.weight.grad.abs().sum() > 0


def test_count_readout_logits_are_output_spike_counts():
    m = CSNN(channels=(4, 8), readout="count", backend="reference", threshold=0.2)
    logits, act = m(frames(t=5))
    assert torch.equal(logits, act["readout"].sum(0))


def test_li_readout_is_mean_membrane_of_the_fc_drive():
    m = CSNN(channels=(4, 8), readout="li", readout_reduce="mean", backend="reference",
             dropout=0.0).eval()
    x = frames(t=4)
    logits, act = m(x)
    feats = act["conv2"].flatten(2)
    alpha = torch.exp(torch.tensor(-m.readout.neuron.dt) / m.readout.neuron.tau_mem)
    v, vs = torch.zeros(2, 10), []
    for t in range(4):  # hand-written LI: v = alpha v + W s + b
        v = alpha * v + m.readout.fc(feats[t])
        vs.append(v)
    torch.testing.assert_close(logits, torch.stack(vs).mean(0), rtol=1e-5, atol=1e-5)


def test_errors_name_the_problem():
    m = CSNN(channels=(4, 8))
    with pytest.raises(ValueError, match=r"CSNN expects \[T, B, 2, 34, 34\], got \(3, 2, 2, 32, 32\)"):
        m(frames(size=32))
    with pytest.raises(ValueError, match="channels must be two positive ints"):
        CSNN(channels=(4,))
    with pytest.raises(ValueError, match="too small"):
        CSNN(input_size=(8, 8))
    with pytest.raises(ValueError, match="readout must be one of"):
        CSNN(readout="softmax")


def test_registry_builds_from_input_shape():
    m = get_model("csnn", input_shape=(2, 34, 34), n_classes=5, channels=(4, 8),
                  backend="reference")
    assert m(frames()).logits.shape == (2, 5)
    with pytest.raises(ValueError, match="camera frames"):
        get_model("csnn", input_shape=(700,), n_classes=5)


@pytest.mark.parametrize("pool_kind", ["avg", "sum"])
@pytest.mark.parametrize("readout", ["li", "count"])
def test_to_sequential_gives_the_eval_logits(pool_kind, readout):
    from torch import nn

    from spiking.pooling import SumPool2d

    torch.manual_seed(1)
    m = CSNN(channels=(4, 8), pool_kind=pool_kind, readout=readout, dropout=0.5,
             threshold=0.3, backend="reference").eval()
    x = frames(t=5)
    with torch.no_grad():
        logits, act = m(x)
        seq = m.to_sequential()
        out, _, rec = seq(x, record=True)
    pool_cls = nn.AvgPool2d if pool_kind == "avg" else SumPool2d
    assert type(m.pool) is pool_cls and type(seq[1]) is pool_cls and type(seq[4]) is pool_cls
    assert seq[0] is m.conv1 and seq[7] is m.readout.fc and seq[8] is m.readout.neuron
    assert act["conv1"].sum() > 0 and act["conv2"].sum() > 0   # the comparison means something
    assert torch.equal(rec[2], act["conv1"]) and torch.equal(rec[5], act["conv2"])
    torch.testing.assert_close(m.readout.logits(out)[0], logits, rtol=0, atol=0)


def test_pool_kind_default_max_and_errors():
    from torch import nn

    m = CSNN(channels=(4, 8))
    assert isinstance(m.pool, nn.MaxPool2d) and m.pool_kind == "max"
    with pytest.raises(TypeError, match="max pooling.*pool_kind='avg' or 'sum'"):
        m.to_sequential()
    with pytest.raises(ValueError, match="pool_kind must be one of"):
        CSNN(pool_kind="min")
    assert get_model("csnn", input_shape=(2, 34, 34), n_classes=10, channels=(4, 8),
                     pool_kind="sum").pool_kind == "sum"
