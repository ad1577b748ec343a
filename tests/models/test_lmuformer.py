"""LMUFormer / spiking LMUFormer: parallel vs recurrent, streaming, op counts, learning."""

import pytest
import torch

from spiking.models.lmuformer import LMUFormer, accuracy_vs_fraction
from spiking.models.registry import get_model


def _model(spiking, **kw):
    m = LMUFormer(5, 3, dim=16, n_blocks=2, order=4, theta=8.0, spiking=spiking,
                  lif_kwargs={"backend": "reference"}, **kw).double()
    x = torch.randn(20, 4, 5, dtype=torch.float64) * 4
    m.train()
    with torch.no_grad():
        m(x)                                   # BatchNorm running statistics
    m.eval()
    return m, x


@pytest.mark.parametrize("spiking", [False, True])
def test_parallel_equals_recurrent_outputs_and_gradients(spiking):
    torch.manual_seed(0)
    m, x = _model(spiking)
    if spiking:
        with torch.no_grad():
            for bn in [*m.conv_bn, *m.tm_bn, *m.bn1, *m.bn2]:
                bn.weight.fill_(2.0)
                bn.bias.fill_(0.8)               # enough drive that every layer spikes
    lp, sp = m(x)
    if spiking:
        assert m.op_counts(x)["spike_acs"] > 0        # spikes reached the layers
    wt = torch.randn_like(lp)
    gp = torch.autograd.grad((lp * wt).sum(), list(m.parameters()))
    m.mode = "recurrent"
    lr, sr = m(x)
    gr = torch.autograd.grad((lr * wt).sum(), list(m.parameters()))
    assert torch.allclose(lp, lr, atol=1e-10)
    for a, b in zip(sp.mem, sr.mem):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(gp, gr):
        assert torch.allclose(a, b, atol=1e-9)
    # streaming: chunks of 7 + 1 + 12 steps with carried state == one pass
    m.mode = "parallel"
    l1, s1 = m(x[:7])
    m.mode = "recurrent"
    l2, s2 = m(x[7:8], s1)
    m.mode = "parallel"
    l3, _ = m(x[8:], s2)
    assert torch.allclose(torch.cat([l1, l2, l3]), lp, atol=1e-10)


def test_prediction_at_every_step_is_running_mean_readout():
    torch.manual_seed(1)
    m, x = _model(False)
    lg, _ = m(x)
    # the prediction after t steps only depends on the first t steps (causality)
    x2 = x.clone()
    x2[10:] = torch.randn_like(x2[10:])
    lg2, _ = m(x2)
    assert torch.allclose(lg[:10], lg2[:10], atol=1e-12)
    assert not torch.allclose(lg[10:], lg2[10:])


def test_spiking_activations_are_binary_and_op_counts():
    torch.manual_seed(2)
    m, x = _model(True)
    seen = []
    hooks = [a.lif.register_forward_hook(lambda mod, i, o: seen.append(o[0])) for a in m.acts]
    m(x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(m.acts)
    for s in seen:
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    c_sp = m.op_counts(x)
    c_dn = _model(False)[0].op_counts(x)
    assert c_dn["spike_acs"] == 0 and c_dn["ratio"] == 1.0
    assert c_sp["dense_equivalent_macs"] == c_dn["dense_macs"]
    assert c_sp["dense_macs"] < c_dn["dense_macs"]          # spiking inputs move MACs to ACs
    assert c_sp["params"] == c_dn["params"]


def test_registry_and_validation():
    m = get_model("spiking-lmuformer", input_shape=(2, 34, 34), n_classes=10, dim=8,
                  spatial_pool=2, order=4)
    out = m(torch.rand(6, 3, 2, 34, 34).round())
    assert out.shape == (3, 10)
    assert m.net.spiking
    assert get_model("lmuformer", input_shape=(700,), n_classes=10, dim=8).net.spiking is False
    with pytest.raises(ValueError, match=r"\[T, B, F\]"):
        m.net(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mode"):
        LMUFormer(3, 2, mode="stream")


def test_learns_fsdd_shd_format_digits(shared_data):
    from spiking.datasets import SHD, BinnedDataset

    f = shared_data / "fsdd-shd-format" / "fsdd_shd_format_test.h5"
    if not f.is_file():
        pytest.skip(f"{f} is absent")
    ds = BinnedDataset(SHD(file=f, train=False), n_time_bins=40)
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    x = torch.stack(xs, 1).flatten(2)                 # [T, 60, 700]
    y = torch.tensor(ys)
    torch.manual_seed(0)
    model = get_model("lmuformer", input_shape=(700,), n_classes=10, dim=32, order=8,
                      theta=20.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    acc = accuracy_vs_fraction(model, [(x, y)], fractions=(0.5, 1.0))
    assert losses[-1] < 0.5 * losses[0]
    assert acc[1.0] > 0.5                              # train-set fit, chance is 0.1
