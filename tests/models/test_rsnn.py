"""RSNN: shapes, adaptive recurrent layers, readouts, masking, errors, learning a toy task."""

import numpy as np
import pytest
import torch

from spiking.models.registry import get_model
from spiking.models.rsnn import RSNN
from spiking.neurons import ALIF


def spikes(t=12, b=3, c=20, p=0.2):
    return (torch.rand(t, b, c) < p).float()


def test_shapes_activity_and_adaptive_neurons():
    m = RSNN(20, 4, hidden=(16, 8), dt=1e-3, threshold=0.5)
    logits, act = m(spikes())
    assert logits.shape == (3, 4)
    assert list(act) == ["rec1", "rec2"]
    assert act["rec1"].shape == (12, 3, 16) and act["rec2"].shape == (12, 3, 8)
    assert all(isinstance(layer.neuron, ALIF) for layer in m.layers)
    assert m.layers[0].neuron.tau_adapt.shape == (16,)          # per-neuron, trainable
    assert m.layers[0].neuron.tau_adapt.requires_grad
    assert m.layers[0].neuron.log_tau_adapt.shape == (16,)      # learnt in log space
    assert torch.all(m.layers[0].recurrent.weight.diagonal() == 0)  # no autapses
    logits.sum().backward()
    assert m.layers[0].neuron.log_tau_mem.grad is not None


def test_run_equals_recurrent_layer_forward():
    m = RSNN(20, 4, hidden=(16,), threshold=0.3).eval()
    x = spikes()
    u = m.inputs[0](x)
    ref, _ = m.layers[0](u)
    _, act = m(x)
    assert torch.equal(act["rec1"], ref)


def test_lengths_mask_padded_steps():
    m = RSNN(20, 4, hidden=(16,), readout_reduce="max").eval()
    x = spikes(t=10, b=2)
    short = m(x[:6, :1]).logits
    padded = torch.cat([x[:6], torch.zeros(4, 2, 20)])
    masked = m(padded, lengths=torch.tensor([6, 10])).logits
    torch.testing.assert_close(masked[0], short[0])


def test_errors():
    with pytest.raises(ValueError, match=r"RSNN expects \[T, B, 20\], got \(12, 3, 21\)"):
        RSNN(20, 4, hidden=(8,))(spikes(c=21))
    with pytest.raises(ValueError, match="hidden must be a non-empty list"):
        RSNN(20, 4, hidden=())


def test_learns_channel_position_task():
    # class k = spikes concentrated in channel band k: a few steps must cut the loss
    torch.manual_seed(0)
    n, c, t = 64, 20, 15
    y = torch.randint(0, 4, (n,))
    rate = torch.full((n, c), 0.02)
    for i in range(n):
        rate[i, 5 * y[i]:5 * y[i] + 5] = 0.5
    x = (torch.rand(t, n, c) < rate).float()
    m = get_model("rsnn", input_shape=(c,), n_classes=4, hidden=[32], dt=1e-3, dropout=0.0,
                  backend="reference")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(m(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (m(x).logits.argmax(1) == y).float().mean() > 0.8


def test_input_pool_sums_neighbouring_channels():
    torch.manual_seed(0)
    pooled = RSNN(20, 4, hidden=(8,), input_pool=5).eval()
    assert pooled.inputs[0].in_features == 4
    plain = RSNN(4, 4, hidden=(8,)).eval()
    plain.load_state_dict(pooled.state_dict())
    x = spikes()
    summed = x.reshape(*x.shape[:2], 4, 5).sum(-1)
    torch.testing.assert_close(pooled(x)[0], plain(summed)[0])
    with pytest.raises(ValueError, match="divide input_size"):
        RSNN(20, 4, input_pool=3)


def test_input_batchnorm_wakes_a_silent_network():
    torch.manual_seed(0)
    x = (torch.rand(30, 8, 50) < 0.03).float()          # sparse input: plain init stays silent
    quiet = RSNN(50, 3, hidden=(32,)).train()
    normed = RSNN(50, 3, hidden=(32,), input_norm="batchnorm").train()
    normed.load_state_dict(quiet.state_dict(), strict=False)
    with torch.no_grad():
        s_quiet = quiet(x)[1]["rec1"].sum()
        s_normed = normed(x)[1]["rec1"].sum()
    assert s_normed > 10 * max(float(s_quiet), 1.0)
    assert len(normed.norms) == 1 and len(quiet.norms) == 0
    with pytest.raises(ValueError, match="input_norm"):
        RSNN(50, 3, input_norm="layer")


@pytest.mark.parametrize("pool,norm,taps", [(1, "none", 1), (5, "batchnorm", 1),
                                            (5, "batchnorm", 3)])
def test_to_sequential_computes_the_eval_model(pool, norm, taps):
    torch.manual_seed(0)
    m = RSNN(20, 3, hidden=(12, 8), input_pool=pool, input_norm=norm, threshold=0.3,
             delay_taps=taps, delay_spacing=2).double()
    x = 2 * (torch.rand(25, 4, 20, dtype=torch.float64) < 0.3).double()
    m.train()
    m(x)                                    # BatchNorm running statistics move off 0 / 1
    m.eval()
    with torch.no_grad():
        logits, act = m(x)
        seq = m.to_sequential()
        out, _, outs = seq(x, record=True)
    assert len(seq) == 2 * 2 + 2
    assert act["rec1"].sum() > 0 and act["rec2"].sum() > 0
    # the recurrent layers' spikes agree with the model's own (rounding of the folded
    # BatchNorm could flip a spike exactly at threshold; none does on this input)
    assert torch.equal(outs[1], act["rec1"]) and torch.equal(outs[3], act["rec2"])
    torch.testing.assert_close(m.readout.logits(out)[0], logits, rtol=0, atol=1e-12)


def test_trained_rsnn_exports_to_nir_and_back():
    pytest.importorskip("nir")
    from spiking.hardware.export import from_nir, to_nir

    torch.manual_seed(1)
    m = RSNN(10, 3, hidden=(6,), input_norm="batchnorm", threshold=0.3, dt=1e-3).double()
    x = 2 * (torch.rand(15, 2, 10, dtype=torch.float64) < 0.4).double()
    m.train()
    m(x)
    m.eval()
    back = from_nir(to_nir(m, x[:, :1]), dt=1e-3).double()
    with torch.no_grad():
        out, _ = m.to_sequential()(x)
        out_back, _ = back(x)
    assert m(x)[1]["rec1"].sum() > 0
    torch.testing.assert_close(out_back, out, rtol=0, atol=1e-9)


def test_rate_bound_gradient_is_that_of_the_penalty():
    from spiking.models.rsnn import RateBound

    torch.manual_seed(0)
    s = (torch.rand(9, 4, 6) < torch.linspace(0.05, 0.9, 6)).float()
    g = torch.randn(9, 4, 6)
    a = s.clone().requires_grad_()
    (RateBound.apply(a, 0.7, 0.3) * g).sum().backward()
    b = s.clone().requires_grad_()
    rate = b.mean((0, 1))
    ((b * g).sum() + 0.7 * torch.clamp(rate - 0.3, min=0).pow(2).sum()).backward()
    torch.testing.assert_close(a.grad, b.grad)
    low = s.mean((0, 1)) <= 0.3
    assert low.any() and (~low).any()
    assert torch.equal(a.grad[:, :, low], g[:, :, low])       # units under the bound: untouched
    assert torch.all(a.grad[:, :, ~low] > g[:, :, ~low])       # the others pushed down
    with pytest.raises(ValueError, match="rate_max"):
        RSNN(20, 4, hidden=(8,), rate_reg=1.0, rate_max=1.5)


def test_rate_reg_quiets_units_firing_above_the_bound():
    # a network driven to fire on most steps; training on the regulariser alone (the loss
    # itself has zero gradient) must bring the rates down towards the bound, and only in
    # training mode
    torch.manual_seed(0)
    x = spikes(t=30, b=8, c=20, p=0.5)

    def rates(m):
        m.eval()
        with torch.no_grad():
            return torch.stack([m(x).activity[k].mean((0, 1)) for k in ("rec1",)])

    def net(reg):
        torch.manual_seed(1)
        m = RSNN(20, 4, hidden=(16,), threshold=0.2, rate_reg=reg, rate_max=0.1, dropout=0.0)
        with torch.no_grad():
            m.inputs[0].bias.fill_(0.5)
        return m

    start = rates(net(1.0))
    assert start.mean() > 0.4
    out = {}
    for reg in (0.0, 1.0):
        m = net(reg)
        opt = torch.optim.SGD(m.parameters(), lr=2.0)
        for _ in range(30):
            m.train()
            opt.zero_grad()
            (m(x).logits.sum() * 0.0).backward()
            opt.step()
        out[reg] = rates(m)
    assert torch.equal(out[0.0], start)                  # no regulariser: nothing moves
    assert out[1.0].mean() < 0.5 * start.mean(), (start.mean(), out[1.0].mean())


def test_delay_taps_drive_is_the_delayed_weighted_sum():
    # drive of neuron j at step t = b_j + sum_i sum_k W[j, i, k] x[t - (K-1-k) d, i] (causal)
    torch.manual_seed(0)
    k_taps, d = 3, 2
    m = RSNN(6, 3, hidden=(5,), delay_taps=k_taps, delay_spacing=d, threshold=0.3).double()
    conv = m.inputs[0]
    assert tuple(conv.weight.shape) == (5, 6, k_taps)
    x = torch.rand(9, 2, 6, dtype=torch.float64)
    ref = conv.bias.expand(9, 2, 5).clone()
    for t in range(9):
        for k in range(k_taps):
            src = t - (k_taps - 1 - k) * d
            if src >= 0:
                ref[t] += x[src] @ conv.weight[:, :, k].T
    seen = {}
    m.layers[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("u", args[0]))
    m(x)
    torch.testing.assert_close(seen["u"], ref, rtol=0, atol=1e-12)
    # the future never leaks into the past: changing the last step leaves earlier spikes alone
    x2 = x.clone()
    x2[-1] += 5
    a1, a2 = m(x)[1]["rec1"], m(x2)[1]["rec1"]
    assert torch.equal(a1[:-1], a2[:-1])
    m(x).logits.sum().backward()
    assert conv.weight.grad.abs().sum() > 0


def test_delay_errors():
    for kw in ({"delay_taps": 0}, {"delay_spacing": 0}, {"delay_taps": 2.5}):
        with pytest.raises(ValueError, match="delay_taps and delay_spacing must be integers"):
            RSNN(6, 3, **kw)


def test_delayed_stack_runs_in_chunks_and_maps_to_delayed_synapses():
    from spiking.hardware import spinnaker
    from spiking.models.delays import DelayedLinear

    torch.manual_seed(0)
    m = RSNN(6, 3, hidden=(5,), delay_taps=3, delay_spacing=2, threshold=0.3).double().eval()
    seq = m.to_sequential()
    assert isinstance(seq[0], DelayedLinear) and seq[0].history == 4
    x = (torch.rand(11, 2, 6, dtype=torch.float64) < 0.4).double()
    whole, _ = seq(x)
    first, st = seq(x[:3])                # shorter than the delay history
    second, _ = seq(x[3:], st)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-12)
    pops, projs, _ = spinnaker.network_from_model(m, x)
    proj = next(p for p in projs if p.pre == "input")
    w = seq[0].conv.weight.detach()
    assert proj.pre_idx.size == int((w != 0).sum()) == 5 * 6 * 3
    # tap k of W[j, i] is i -> j delayed by (K-1-k) d steps on top of the one-step hop
    for j, i, k in ((0, 0, 0), (4, 5, 2), (2, 3, 1)):
        hit = (proj.post_idx == j) & (proj.pre_idx == i) & (proj.weight == float(w[j, i, k]))
        assert hit.sum() == 1 and proj.delay[hit][0] == 1 + (2 - k) * 2


def test_delay_taps_operation_counts():
    # dense: every output step reads K input vectors; event-driven: an input spike reaches
    # each output neuron once per delay that lands inside the sequence
    from spiking.hardware.counting import count
    from spiking.models import delays

    t, b, c, h, k, d = 10, 2, 6, 5, 3, 2
    x = (torch.rand(t, b, c) < 0.3).float()
    m = RSNN(c, 3, hidden=(h,), delay_taps=k, delay_spacing=d).eval()
    conv = count(m, x).layers[0]
    assert conv.name == "inputs.0"
    assert conv.dense == t * h * c * k
    pairs = sum(int(x[s].sum()) for s in range(t) for j in range(k) if s + j * d < t)
    assert conv.effective_acs == h * pairs / b
    assert delays.fan_out_steps(x.flatten(1).sum(1), k, d) == pairs


@pytest.mark.parametrize("kw", [{"input_pool": 5}, {"delay_taps": 3}])
def test_hardware_example_input_has_the_models_input_shape(kw):
    # the first weight layer does not tell it here (pooled channels, or a convolution)
    from spiking.hardware.report import example_input

    m = RSNN(20, 3, hidden=(8,), **kw)
    x = example_input(m, steps=7)
    assert x.shape == (7, 1, 20)
    m(x)


def test_learnt_delays_soft_kernel_and_position_gradient():
    # soft phase: each synapse's taps sum to its weight, spread by a Gaussian centred at its
    # position (tap k = lag K-1-k); the position's gradient matches finite differences
    from spiking.models.delays import LearntDelays

    torch.manual_seed(0)
    m = LearntDelays(4, 3, 5, 2).double()
    m.set_progress(0, 10)
    assert float(m.sigma) == 1.0                        # max(5 // 3, 0.5)
    k = m.weight.detach()
    torch.testing.assert_close(k.sum(-1), m.syn_weight.detach(), rtol=1e-12, atol=1e-12)
    lag_peak = 4 - k.abs().argmax(-1)
    assert torch.equal(lag_peak, m.delay_pos.detach().round().long())
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    p0 = m.delay_pos.detach().clone()

    def loss(p):
        with torch.no_grad():
            m.delay_pos.copy_(p)
        return (m(x) ** 2).sum()
    m.delay_pos.grad = None
    loss(p0).backward()
    g = m.delay_pos.grad.clone()
    e = torch.zeros_like(p0)
    e[1, 2] = 1e-6
    fd = (loss(p0 + e).item() - loss(p0 - e).item()) / 2e-6
    assert abs(fd - g[1, 2].item()) < 1e-6 * max(1.0, abs(fd)) and g.abs().sum() > 0


def test_learnt_delays_schedule_then_hard_synapses_give_the_delayed_sum():
    from spiking.hardware import spinnaker
    from spiking.hardware.counting import count
    from spiking.models.delays import SIGMA_END, LearntDelays

    m = LearntDelays(2, 2, 4, 3)
    sig = []
    for e in range(10):
        m.set_progress(e, 10)
        sig.append(float(m.sigma))
    assert sig[0] == 1.0 and sig[4] == pytest.approx(1.0 * SIGMA_END ** (4 / 5))
    assert all(a > b for a, b in zip(sig[:5], sig[1:5])) and sig[5:] == [0.0] * 5
    torch.manual_seed(1)
    net = RSNN(6, 3, hidden=(5,), delay_taps=4, delay_spacing=3, delay_learn=True,
               threshold=0.3).double().eval()
    proj = net.inputs[0]
    proj.set_progress(9, 10)
    lag = proj.delays()                                          # [O, I] steps
    assert lag.unique().numel() > 1 and int(lag.max()) <= 9
    x = (torch.rand(14, 2, 6, dtype=torch.float64) < 0.4).double()
    want = proj.bias.detach().expand(14, 2, 5).clone()
    for j in range(5):
        for i in range(6):
            d = int(lag[j, i])
            want[d:, :, j] += proj.syn_weight[j, i].item() * x[:14 - d, :, i]
    from spiking.models import delays
    with torch.no_grad():
        got = delays.apply(proj, x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # the hardware sees one synapse per pair, at its learnt delay, and one weight read each
    pops, projs, _ = spinnaker.network_from_model(net, x)
    inp = next(p for p in projs if p.pre == "input")
    assert inp.pre_idx.size == 5 * 6
    assert np.array_equal(inp.delay, 1 + lag.numpy()[inp.post_idx, inp.pre_idx])
    c = next(lc for lc in count(net, x).layers if lc.name == "inputs.0")
    assert c.weights - c.zero_weights == 30 and c.dense == 14 * 30
    with pytest.raises(ValueError, match="learnt delays need delay_taps > 1"):
        RSNN(6, 3, delay_learn=True)


def test_learnt_delay_histogram_plot(tmp_path):
    from spiking.training import plots

    m = RSNN(6, 3, hidden=(5, 4), delay_taps=4, delay_spacing=2, delay_learn=True)
    p = plots.learnt_delays(m, tmp_path / "delays.png", dt=14e-3)
    assert p.stat().st_size > 0 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.learnt_delays(RSNN(6, 3), tmp_path / "none.png", dt=None) is None
    assert not (tmp_path / "none.png").exists()


def test_learnt_delay_position_past_the_grid_still_gets_a_gradient():
    from spiking.models.delays import LearntDelays

    torch.manual_seed(0)
    m = LearntDelays(2, 2, 4, 1).double()
    with torch.no_grad():
        m.delay_pos.fill_(5.0)                               # past the last tap (3)
    assert torch.equal(m.delays(), torch.full((2, 2), 3))
    (m(torch.randn(1, 2, 8, dtype=torch.float64)) ** 2).sum().backward()
    assert (m.delay_pos.grad != 0).all()


def test_learnt_delays_loaded_hard_checkpoint_runs_hard():
    # the forward reads a host copy of sigma: loading a hard (sigma 0) state must make the
    # kernel one tap per synapse, and loading a soft one must spread it again
    from spiking.models.delays import LearntDelays

    torch.manual_seed(2)
    hard = LearntDelays(3, 2, 5, 1)
    hard.set_progress(9, 10)
    fresh = LearntDelays(3, 2, 5, 1)                     # soft (sigma 1) as built
    assert ((fresh.weight != 0).sum(-1) == 5).all()
    fresh.load_state_dict(hard.state_dict())
    assert float(fresh.sigma) == 0.0
    torch.testing.assert_close(fresh.weight, hard.weight, rtol=0, atol=0)
    assert ((fresh.weight != 0).sum(-1) <= 1).all()
    fresh.load_state_dict(LearntDelays(3, 2, 5, 1).state_dict())
    assert ((fresh.weight != 0).sum(-1) == 5).all() and "sigma=1" in repr(fresh)


def test_learnt_delay_position_lr_scale_is_checked_and_needs_learnt_delays():
    from spiking.models.delays import POS_LR_SCALE, LearntDelays, projection

    assert LearntDelays(2, 2, 3, 1).pos_lr_scale == POS_LR_SCALE
    net = RSNN(4, 2, hidden=(3,), delay_taps=3, delay_learn=True, delay_pos_lr_scale=20)
    assert net.inputs[0].pos_lr_scale == 20.0
    for bad in (0, -1, float("inf"), float("nan"), "fast", True):
        with pytest.raises(ValueError, match="lr scale must be a number > 0"):
            LearntDelays(2, 2, 3, 1, pos_lr_scale=bad)
    with pytest.raises(ValueError, match="needs learnt delays"):
        projection(2, 2, 3, 1, pos_lr_scale=20)
