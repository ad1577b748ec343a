"""Recurrent: generic recurrent spiking layer against hand-written loops; shapes; errors."""

import math

import pytest
import torch
from torch import nn

from spiking import LIF, CubaLIF, Sequential
from spiking.kernels.lif import LIFState
from spiking.models import Recurrent, RecurrentState

F64 = torch.float64


def test_dense_lif_matches_hand_loop():
    """u = W_in x + b_in + W_rec s + b_rec; v = a v + u; s = v > thr; v -= thr s."""
    T, B, I, N = 60, 3, 5, 7
    dt, tau, thr = 1e-3, 8e-3, 0.6
    layer = Recurrent(LIF(tau, thr, dt), N, I, input_bias=True, recurrent_bias=True).double()
    x = torch.randn(T, B, I, dtype=F64) * 1.5 + 0.3
    out, state, traj = layer(x, record=True)

    w_in, b_in = layer.input.weight.detach(), layer.input.bias.detach()
    w_rec, b_rec = layer.recurrent.weight.detach(), layer.recurrent.bias.detach()
    alpha = math.exp(-dt / tau)
    v, s = torch.zeros(B, N, dtype=F64), torch.zeros(B, N, dtype=F64)
    spikes, vs = [], []
    for t in range(T):
        v = alpha * v + (x[t] @ w_in.T + b_in + s @ w_rec.T + b_rec)
        s = (v > thr).to(F64)
        v = v - thr * s
        spikes.append(s)
        vs.append(v)
    ref = torch.stack(spikes)
    assert 0 < ref.sum() < ref.numel()
    assert torch.equal(out.detach(), ref)
    torch.testing.assert_close(traj.v.detach(), torch.stack(vs), rtol=0, atol=1e-12)
    assert torch.equal(state.spikes.detach(), ref[-1])


def test_one_to_one_cuba_matches_hand_loop():
    """No input projection; current i = a_s i + x + w * s; membrane driven by this step's i."""
    T, B, N = 80, 2, 6
    dt, tau_m, tau_s, thr = 1e-3, 10e-3, 4e-3, 0.5
    layer = Recurrent(CubaLIF(tau_m, tau_s, thr, dt), N, recurrent="one_to_one",
                      recurrent_bias=True).double()
    with torch.no_grad():
        layer.recurrent_weight.copy_(torch.linspace(-0.8, 0.5, N))
        layer.recurrent_bias.fill_(0.01)
    x = torch.randn(T, B, N, dtype=F64) * 0.8 + 0.1
    out, _, traj = layer(x, record=True)
    a_m, a_s = math.exp(-dt / tau_m), math.exp(-dt / tau_s)
    w, b = layer.recurrent_weight.detach(), layer.recurrent_bias.detach()
    v = i = s = torch.zeros(B, N, dtype=F64)
    spikes, cur = [], []
    for t in range(T):
        i = a_s * i + (x[t] + w * s + b)
        v = a_m * v + i
        s = (v > thr).to(F64)
        v = v - thr * s
        spikes.append(s)
        cur.append(i)
    ref = torch.stack(spikes)
    assert 0 < ref.sum() < ref.numel()
    assert torch.equal(out.detach(), ref)
    torch.testing.assert_close(traj.i.detach(), torch.stack(cur), rtol=0, atol=1e-12)


def test_autapses_false_ignores_diagonal():
    torch.manual_seed(1)
    a = Recurrent(LIF(), 5, 3, autapses=False).double()
    b = Recurrent(LIF(), 5, 3, autapses=True).double()
    b.load_state_dict(a.state_dict(), strict=False)
    assert torch.all(torch.diagonal(a.recurrent.weight) == 0)
    with torch.no_grad():
        a.recurrent.weight.fill_diagonal_(5.0)  # ignored: masked in the forward
    x = torch.randn(40, 2, 3, dtype=F64) * 2
    assert torch.equal(a(x)[0], b(x)[0])


def test_shapes_state_continuation_batch_first_and_cell():
    T, B, I, N = 30, 4, 3, 6
    layer = Recurrent(LIF(), N, I)
    x = torch.randn(T, B, I) * 2
    out, state = layer(x)
    assert out.shape == (T, B, N)
    assert isinstance(state, RecurrentState) and isinstance(state.neuron, LIFState)
    assert state.neuron.v.shape == (B, N) and state.spikes.shape == (B, N)
    _, _, traj = layer(x, record=True)
    assert traj.v.shape == (T, B, N) and traj.i is None
    # two halves with the carried state equal the whole
    o1, s1 = layer(x[:12])
    o2, s2 = layer(x[12:], s1)
    assert torch.equal(torch.cat([o1, o2]), out)
    assert torch.equal(s2.neuron.v, state.neuron.v)
    # batch_first
    bf = Recurrent(LIF(), N, I, batch_first=True)
    bf.load_state_dict(layer.state_dict())
    ob, _ = bf(x.transpose(0, 1))
    assert torch.equal(ob.transpose(0, 1), out)
    # cell form, step by step
    cell, st, steps = layer.cell(), None, []
    for t in range(T):
        s, st = cell(x[t], st)
        steps.append(s)
    assert torch.equal(torch.stack(steps), out)


def test_in_sequential_and_gradients():
    seq = Sequential(nn.Linear(4, 8), Recurrent(CubaLIF(), 8, 8), nn.Linear(8, 2))
    x = torch.randn(25, 3, 4) * 3
    y, states = seq(x)
    assert y.shape == (25, 3, 2)
    assert states[0] is None and isinstance(states[1], RecurrentState)
    y.sum().backward()
    g = seq[1].recurrent.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("make,match", [
    (lambda: Recurrent(LIF(), None, 3), "hidden_size"),
    (lambda: Recurrent(LIF(), None), "hidden_size"),
    (lambda: Recurrent(LIF(), 4, recurrent="sparse"), "recurrent"),
    (lambda: Recurrent(nn.Linear(2, 2), 4), "neuron"),
    (lambda: Recurrent(LIF(), 0), "hidden_size"),
])
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_input_errors():
    layer = Recurrent(LIF(), 6, 3)
    with pytest.raises(ValueError, match="expected 3"):
        layer(torch.randn(10, 2, 5))
    with pytest.raises(ValueError, match="rank 3"):
        layer(torch.randn(10, 3))
    with pytest.raises(ValueError, match="rank 2"):
        layer.step(torch.randn(3))
    with pytest.raises(ValueError, match="RecurrentState"):
        layer.step(torch.randn(2, 3), state=(1, 2))
    no_proj = Recurrent(LIF(), 6)
    with pytest.raises(ValueError, match="expected 6"):
        no_proj(torch.randn(10, 2, 5))
