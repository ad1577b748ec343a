"""LTC and CfC modules: sequence vs cell, timespans, batch_first, BPTT, ncps parity, errors."""

from __future__ import annotations

import pytest
import torch

from spiking import Sequential
from spiking.kernels.cfc import CfCState
from spiking.kernels.ltc import LTCState
from spiking.neurons import LTC, CfC

D = torch.float64


def make(kind, **kw):
    torch.manual_seed(0)
    if kind == "ltc":
        return LTC(3, 5, out_features=kw.pop("out_features", 2), **kw).double()
    return CfC(3, 5, backbone_units=6, **kw).double()


KINDS = ["ltc", "cfc"]


@pytest.mark.parametrize("kind", KINDS)
def test_cell_step_equals_sequence_with_irregular_timespans(kind):
    m = make(kind, backend="reference")  # the fused LTC path is compared in tests/kernels
    x = torch.randn(5, 2, 3, dtype=D)
    ts = torch.rand(5, 2, dtype=D) * 2e-3 + 1e-4
    y, st = m(x, timespans=ts)
    cell, s = m.cell(), None
    for t in range(5):
        yt, s = cell(x[t], s, timespan=ts[t])
        assert torch.equal(yt, y[t])
    assert all(torch.equal(a, b) for a, b in zip(s, st))


@pytest.mark.parametrize("kind", KINDS)
def test_timespans_all_dt_equal_default_and_state_continues(kind):
    m = make(kind, backend="reference")
    x = torch.randn(6, 3, 3, dtype=D)
    y, _st = m(x)
    y2, _ = m(x, timespans=torch.full((6, 3), m.dt, dtype=D))
    y3, _ = m(x, timespans=[m.dt] * 6)
    assert torch.equal(y, y2) and torch.equal(y, y3)
    ya, sa = m(x[:2])
    yb, _sb = m(x[2:], sa)
    assert torch.allclose(torch.cat([ya, yb]), y, atol=1e-15, rtol=0)
    y4, _ = m(x, timespans=torch.full((6,), 4 * m.dt, dtype=D))
    assert not torch.allclose(y, y4)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first(kind):
    m = make(kind, backend="reference")
    x = torch.randn(4, 2, 3, dtype=D)
    ts = torch.rand(4, 2, dtype=D) * 1e-3 + 1e-4
    y, st = m(x, timespans=ts)
    m.batch_first = True
    yb, stb, traj = m(x.transpose(0, 1).contiguous(), timespans=ts.T.contiguous(), record=True)
    assert torch.equal(yb, y.transpose(0, 1))
    assert torch.equal(stb[0], st[0])
    assert traj[0].shape[:2] == (4, 2)  # trajectories stay time-first


def test_ltc_tau_is_seconds_and_scaled_with_dt():
    torch.manual_seed(1)
    a = LTC(2, 4, dt=1e-3)
    torch.manual_seed(1)
    b = LTC(2, 4, dt=1.0)
    assert torch.allclose(a.tau * 1e3, b.tau, rtol=1e-5)
    # same random init, time rescaled: regular steps of dt give the same trajectory
    x = torch.randn(5, 2, 2)
    assert torch.allclose(a(x)[0], b(x)[0], atol=1e-5)


def test_ltc_module_matches_ncps_ltc_sequence():
    ncps = pytest.importorskip("ncps")
    from ncps.torch import LTC as NcpsLTC
    torch.manual_seed(3)
    wiring = ncps.wirings.AutoNCP(6, 2, seed=4)
    # ncps' LTC applies softplus to w, sensory_w, cm, gleak (implicit constraints), as we do
    ref = NcpsLTC(3, wiring, return_sequences=True, batch_first=False).double()
    dt = 1e-3
    m = LTC(3, 6, dt=dt, out_features=2, sparsity_mask=wiring.adjacency_matrix,
            sensory_sparsity_mask=wiring.sensory_adjacency_matrix).double()
    P = ref.rnn_cell._params
    with torch.no_grad():
        for ours, theirs in [("gleak_raw", "gleak"), ("vleak", "vleak"), ("w_raw", "w"),
                             ("sigma", "sigma"), ("mu", "mu"), ("erev", "erev"),
                             ("sensory_w_raw", "sensory_w"), ("sensory_sigma", "sensory_sigma"),
                             ("sensory_mu", "sensory_mu"), ("sensory_erev", "sensory_erev"),
                             ("input_w", "input_w"), ("input_b", "input_b"),
                             ("output_w", "output_w"), ("output_b", "output_b")]:
            getattr(m, ours).copy_(P[theirs])
        # ncps: cm in "per step" units; ours in seconds: cm = softplus(raw) * dt
        cm = torch.nn.functional.softplus(P["cm"]) * dt
        m.cm_raw.copy_(cm + torch.log(-torch.expm1(-cm)))
        P["input_b"].uniform_(-0.2, 0.2)
        m.input_b.copy_(P["input_b"])
    x = torch.randn(7, 4, 3, dtype=D)
    with torch.no_grad():
        y_ref, h_ref = ref(x)
        y, st = m(x)
    assert torch.allclose(y, y_ref, atol=1e-9, rtol=0)
    assert torch.allclose(st.v, h_ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_bptt_gives_finite_gradients_to_every_parameter(kind):
    m = make(kind) if kind == "ltc" else make(kind, mode="pure")
    if kind == "cfc":  # |w_tau| has zero (sub)gradient at its init value 0, as in ncps
        torch.nn.init.uniform_(m.w_tau, 0.1, 0.5)
    x = torch.randn(6, 2, 3, dtype=D, requires_grad=True)
    y, st = m(x, timespans=torch.rand(6, dtype=D) * 2e-3 + 1e-4)
    (y.square().sum() + st[0].sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_cfc_module_gradcheck_through_parameters():
    m = CfC(2, 3, backbone_units=4).double()
    names = [n for n, _ in m.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(3, 2, 2, dtype=D, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))[0]

    assert torch.autograd.gradcheck(f, (x, *leaves), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_training_reduces_loss_on_a_toy_task():
    torch.manual_seed(0)
    net = Sequential(LTC(1, 4, out_features=1, ode_unfolds=2))
    x = torch.linspace(0, 1, 8).reshape(8, 1, 1).expand(8, 4, 1).contiguous()
    target = torch.sin(3 * x)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        out, _ = net(x)
        loss = (out - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_float32_and_states_are_namedtuples():
    y, st = LTC(3, 4)(torch.randn(2, 1, 3))
    assert y.dtype == torch.float32 and isinstance(st, LTCState)
    y, st = CfC(3, 4, backbone_units=5)(torch.randn(2, 1, 3))
    assert isinstance(st, CfCState) and st.h.shape == (1, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_errors_name_the_bad_value(kind):
    cls = LTC if kind == "ltc" else CfC
    for dt in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="dt"):
            cls(3, 4, dt=dt)
    with pytest.raises(ValueError, match="units"):
        cls(3, 0)
    m = cls(3, 4, check_finite=True)
    with pytest.raises(ValueError, match="rank"):
        m(torch.randn(5, 3))
    with pytest.raises(ValueError, match="rank 3"):
        m(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="expected 3"):
        m(torch.randn(5, 2, 4))
    bad = torch.randn(5, 2, 3)
    bad[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        m(bad)
    with pytest.raises(ValueError, match="non-finite"):
        m.step(bad[2])
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="timespans"):
        m(x, timespans=torch.tensor([1e-3, 0.0, 1e-3, 1e-3, 1e-3]))
    with pytest.raises(ValueError, match="timespans"):
        m(x, timespans=-torch.ones(5, 2))
    with pytest.raises(ValueError, match="timespans has shape"):
        m(x, timespans=torch.ones(4))
    with pytest.raises(ValueError, match="timespan"):
        m.step(x[0], timespan=-1.0)
    with pytest.raises(ValueError, match="state"):
        m(x, (torch.zeros(2, 5),))
    with pytest.raises(ValueError, match="rank 2"):
        m.step(x)


def test_constructor_errors():
    with pytest.raises(ValueError, match="ode_unfolds"):
        LTC(2, 3, ode_unfolds=0)
    with pytest.raises(ValueError, match="out_features"):
        LTC(2, 3, out_features=4)
    with pytest.raises(ValueError, match="input_mapping"):
        LTC(2, 3, input_mapping="bogus")
    with pytest.raises(ValueError, match="sparsity_mask"):
        LTC(2, 3, sparsity_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="time_scale"):
        CfC(2, 3, time_scale=0.0)
    with pytest.raises(ValueError, match="mode"):
        CfC(2, 3, mode="fast")
    with pytest.raises(ValueError, match="activation"):
        CfC(2, 3, activation="sigmoid")
