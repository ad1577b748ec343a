"""EGRU network: registry contract, activity regulariser, op counts, learning a real task."""

import numpy as np
import pytest
import torch
from model_helpers import fold_batchnorm

from spiking.kernels import egru as K
from spiking.models.egru import EGRU, ActivityRegularizer
from spiking.models.registry import get_model


def nmnist_two_digits(root, n_train=60, n_test=40, bins=8, pool=4):
    """Digits 0 and 1 of the genuine N-MNIST subset, binned and pooled to [T, S, 2, 8, 8]."""
    from spiking.datasets import NMNIST
    from spiking.datasets.binning import bin_events

    out = []
    for train, n in ((True, n_train), (False, n_test)):
        ds = NMNIST(root / "nmnist-subset", train=train)
        idx = [i for c in (0, 1) for i in [k for k, y in enumerate(ds.targets) if y == c][:n // 2]]
        xs, ys = [], []
        for i in idx:
            ev, y = ds[i]
            fr = torch.as_tensor(np.asarray(bin_events(ev, (34, 34, 2), n_time_bins=bins)))
            xs.append(torch.nn.functional.avg_pool2d(fr.float(), pool, pool))
            ys.append(int(y))
        out += [torch.stack(xs, 1), torch.tensor(ys)]
    return out


def fit(model, xtr, ytr, steps, lr):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for s in range(steps):
        idx = torch.randperm(xtr.shape[1])[:20]
        logits, _ = model(xtr[:, idx])
        loss = torch.nn.functional.cross_entropy(logits, ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def test_registry_contract_and_shapes():
    m = get_model("egru", input_shape=(2, 5, 5), n_classes=4, hidden=[16, 8])
    logits, act = m(torch.rand(6, 3, 2, 5, 5))
    assert logits.shape == (3, 4)
    assert set(act) == {"egru0", "egru1"} and act["egru1"].shape == (6, 3, 8)
    assert set(act["egru0"].unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="EGRU expects"):
        m(torch.rand(6, 3, 50))


def test_activity_regulariser_gradient():
    y = torch.tensor([[0.0, 2.0, -1.0]], requires_grad=True)
    out = ActivityRegularizer.apply(y, 0.3)
    assert torch.equal(out, y)
    out.sum().backward()
    torch.testing.assert_close(y.grad, torch.tensor([[1.0, 1.1, 0.9]]))  # 1 + 0.3 sign(y) / 3


def test_regulariser_lowers_activity():
    torch.manual_seed(0)
    x = torch.rand(10, 16, 12)
    acts = []
    for lam in (0.0, 50.0):
        torch.manual_seed(1)
        m = EGRU(12, 2, hidden=[32], threshold_init=0.0, activity_reg=lam, dropout=0.0)
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(8):
            logits, _ = m(x)
            loss = logits.pow(2).mean()  # a task loss that does not care about activity
            opt.zero_grad()
            loss.backward()
            opt.step()
        acts.append(float(m(x)[1]["egru0"].mean()))
    assert acts[1] < acts[0] - 0.05


def test_op_counts_uses_events():
    m = EGRU(12, 3, hidden=[16])
    _, act = m(torch.rand(5, 2, 12))
    c = m.op_counts(5, 2, act)
    assert c["recurrent_macs_dense"] == 5 * 2 * 3 * 16 * 16
    assert c["recurrent_macs_event"] == 3 * 16 * int(act["egru0"][:-1].sum())
    assert c["recurrent_macs_event"] <= c["recurrent_macs_dense"]


def test_model_fused_and_reference_agree():
    pytest.importorskip("numba")
    torch.manual_seed(0)
    m = EGRU(7, 3, hidden=[11, 9], threshold_init=0.05, dropout=0.0).double()
    x = torch.rand(6, 4, 7, dtype=torch.float64)
    grads = []
    for backend in ("reference", "cpu"):
        for layer in m.layers:
            layer.backend = backend
        m.zero_grad()
        logits, _ = m(x)
        logits.pow(2).sum().backward()
        grads.append([logits.detach()] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_learns_nmnist_digits_beyond_chance(shared_data):
    torch.manual_seed(0)
    xtr, ytr, xte, yte = nmnist_two_digits(shared_data)
    m = fit(EGRU((2, 8, 8), 2, hidden=[48], dropout=0.0), xtr, ytr, steps=30, lr=1e-2)
    with torch.no_grad():
        logits, act = m(xte)
    acc = float((logits.argmax(1) == yte).float().mean())
    assert acc >= 0.8, acc  # chance is 0.5
    assert float(act["egru0"].mean()) < 0.9  # events are sparse, not every unit every step
    assert K.TRIANGLE_ALPHA > 0


def test_input_batchnorm_normalises_the_drive_and_folds_in_eval():
    torch.manual_seed(0)
    x = (torch.rand(12, 16, 30) < 0.05).float()              # sparse spikes
    normed = EGRU(30, 3, hidden=[8, 6], input_norm="batchnorm").double().train()
    assert normed.layers[0].norm.num_features == 24 and normed.layers[1].norm is not None
    drive = {}
    normed.layers[0].register_forward_pre_hook(lambda m, a: drive.update(x=a[0]))
    normed(x.double())
    lay = normed.layers[0]
    u = lay.norm(lay.linear(drive["x"]).reshape(-1, 24))      # still train mode: batch stats
    torch.testing.assert_close(u.mean(0), torch.zeros(24, dtype=torch.float64))
    # eval mode: the normalisation is an affine map of the drive, i.e. a plain EGRU with the
    # running statistics folded into its input Linear computes the same logits
    with torch.no_grad():
        for layer in normed.layers:
            layer.norm.weight.uniform_(0.5, 2.0)
            layer.norm.bias.uniform_(-0.5, 0.5)
    normed.eval()
    plain = EGRU(30, 3, hidden=[8, 6]).double().eval()
    plain.load_state_dict(normed.state_dict(), strict=False)
    for a, b in zip(plain.layers, normed.layers):
        fold_batchnorm(a.linear, b.norm)
    torch.testing.assert_close(plain(x.double())[0], normed(x.double())[0])
    with pytest.raises(ValueError, match="input_norm"):
        EGRU(30, 3, input_norm="layer")


def test_input_pool_sums_neighbouring_audio_channels():
    from spiking.models.egru import sum_pool

    x = torch.randint(0, 3, (4, 2, 7)).float()
    got = sum_pool(x, (7,), 3)
    want = torch.stack([x[..., 0:3].sum(-1), x[..., 3:6].sum(-1), x[..., 6]], -1)  # short last
    assert torch.equal(got, want)
    m = EGRU((700,), 20, hidden=[8], input_pool=5)
    assert m.layers[0].input_size == 140
    assert m(torch.rand(3, 2, 700))[0].shape == (2, 20)
    frames = torch.rand(3, 2, 2, 4, 4)
    pooled = sum_pool(frames, (2, 4, 4), 2)
    assert pooled.shape == (3, 2, 8)
    torch.testing.assert_close(pooled[..., 0], frames[:, :, 0, :2, :2].sum((-1, -2)))
    for bad_pool, shape in ((0, (700,)), (2, (4, 5)), (1.5, (700,))):
        with pytest.raises(ValueError, match="input_pool must be"):
            EGRU(shape, 3, input_pool=bad_pool)


def _drive(m, x):
    """The first layer's drive W x + b as the kernel receives it, and the activity."""
    seen = {}
    hook = K.run
    try:
        K.run = lambda wx, *a, **kw: (seen.setdefault("wx", wx), hook(wx, *a, **kw))[1]
        _, act = m(x)
    finally:
        K.run = hook
    return seen["wx"], act


def test_delay_taps_drive_and_op_counts():
    torch.manual_seed(0)
    taps, d, t, b = 3, 2, 7, 2
    m = EGRU(5, 3, hidden=[4, 6], threshold_init=0.05, dropout=0.0, delay_taps=taps,
             delay_spacing=d).double()
    conv = m.layers[0].linear
    assert tuple(conv.weight.shape) == (12, 5, taps)
    x = (torch.rand(t, b, 5) < 0.4).double()
    ref = conv.bias.expand(t, b, 12).clone()          # causal delayed sum, written out
    for s in range(t):
        for k in range(taps):
            if s - (taps - 1 - k) * d >= 0:
                ref[s] += x[s - (taps - 1 - k) * d] @ conv.weight[:, :, k].T
    wx, act = _drive(m, x)
    torch.testing.assert_close(wx, ref, rtol=0, atol=1e-12)

    def pairs(ev_per_step):        # (event, delay) pairs whose output step is inside [0, T)
        return sum(int(ev_per_step[s]) for s in range(t) for k in range(taps) if s + k * d < t)

    c = m.op_counts(t, b, act, x=x)
    h0, h1 = 4, 6
    assert c["input_macs_dense"] == t * b * 3 * (h0 * 5 + h1 * h0) * taps
    in0 = pairs((x != 0).flatten(1).sum(1))
    in1 = pairs(act["egru0"].flatten(1).sum(1))
    assert in0 > 0 and in1 > 0
    assert c["input_acs_event"] == 3 * h0 * in0
    assert c["input_macs_event"] == 3 * h1 * in1
    with pytest.raises(ValueError, match="delay_taps and delay_spacing must be integers"):
        EGRU(5, 3, delay_spacing=0)


def test_learnt_delays_drive_and_op_counts():
    # delay_learn: soft (Gaussian over the taps) counts as the K dense taps; hard, each synapse
    # j <- i adds w[j, i] x[s - D[j, i], i] and an event reaches each synapse once, at its delay
    from spiking.models.delays import LearntDelays, synapse_fan_out

    torch.manual_seed(1)
    taps, d, t, b = 4, 2, 9, 2
    m = EGRU(5, 3, hidden=[4, 6], threshold_init=0.05, dropout=0.0, delay_taps=taps,
             delay_spacing=d, delay_learn=True).double()
    lin = m.layers[0].linear
    assert isinstance(lin, LearntDelays) and not lin.hard
    x = (torch.rand(t, b, 5) < 0.4).double()
    h0, h1 = 4, 6
    _, act = m(x)
    assert m.op_counts(t, b, act, x=x)["input_macs_dense"] == t * b * 3 * (h0 * 5 + h1 * h0) * taps
    for layer in m.layers:
        layer.linear.set_progress(5, 10)                     # from half the epochs: hard
    assert lin.hard
    D, w = lin.delays(), lin.syn_weight.detach()
    assert 0 < int(D.max()) <= (taps - 1) * d and D.min() >= 0
    ref = lin.bias.detach().expand(t, b, 12).clone()
    for s in range(t):
        for j in range(12):
            for i in range(5):
                if s - int(D[j, i]) >= 0:
                    ref[s, :, j] += w[j, i] * x[s - int(D[j, i]), :, i]
    wx, act = _drive(m, x)
    torch.testing.assert_close(wx, ref, rtol=0, atol=1e-12)

    def pairs(ev, delay):          # (event, synapse) pairs whose output step is inside [0, T)
        return sum(int(ev[s, i]) for s in range(t) for i in range(ev.shape[1])
                   for j in range(delay.shape[0]) if s + int(delay[j, i]) < t)

    c = m.op_counts(t, b, act, x=x)
    assert c["input_macs_dense"] == t * b * 3 * (h0 * 5 + h1 * h0)
    in0 = pairs((x != 0).sum(1), D)
    in1 = pairs(act["egru0"].sum(1), m.layers[1].linear.delays())
    assert in0 > 0 and in1 > 0 and in0 < 12 * int((x != 0).sum())   # some fall past the end
    assert c["input_acs_event"] == in0 and c["input_macs_event"] == in1
    with pytest.raises(ValueError, match=r"delay \(12, 5\) does not match events \(9, 4\)"):
        synapse_fan_out(torch.ones(9, 4), D)
    slow = EGRU(5, 3, hidden=[4, 6], delay_taps=3, delay_learn=True, delay_pos_lr_scale=20)
    assert [layer.linear.pos_lr_scale for layer in slow.layers] == [20.0, 20.0]
