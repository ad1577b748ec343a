"""LTCNet: LTC / CfC stacks, NCP wiring, irregular time steps, learning a real task."""

import pytest
import torch
from model_helpers import fold_batchnorm

from spiking.models.ltc import LTCNet, ncp_wiring
from spiking.models.registry import get_model


def test_ncp_wiring_structure():
    sens, rec = ncp_wiring(8, inter=12, command=6, motor=3, sensory_fanout=4, inter_fanout=3,
                           recurrent_command=5, motor_fanin=2, seed=0)
    m, c = 3, 6
    inter = slice(m + c, None)
    assert sens.shape == (8, 21) and rec.shape == (21, 21)
    assert set(sens.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (sens[:, : m + c] == 0).all()                    # sensory -> inter only
    assert ((sens != 0).sum(1) == 4).all()                  # sensory fan-out
    assert ((rec[inter][:, m: m + c] != 0).sum(1) == 3).all()  # inter -> command fan-out
    assert (rec[inter][:, :m] == 0).all() and (rec[inter][:, inter] == 0).all()
    assert ((rec[m: m + c, :m] != 0).sum(0) == 2).all()       # motor fan-in from command
    assert (rec[:m] == 0).all()                               # motor neurons project nowhere
    assert (sens[:, inter] != 0).any(0).all()                 # every inter neuron has input


@pytest.mark.parametrize("cell", ["ltc", "cfc"])
@pytest.mark.parametrize("wiring", ["fc", "ncp"])
def test_shapes_registry_and_timespans(cell, wiring):
    m = get_model(cell, input_shape=(7,), n_classes=3, wiring=wiring, units=10, sensory=6,
                  inter=8, command=5, motor=4, dt=10e-3, ode_unfolds=2)
    x = torch.rand(5, 2, 7)
    logits, act = m(x)
    assert logits.shape == (2, 3) and act == {}
    # irregular steps: equal spans give the regular result, other spans change it
    same, _ = m(x, timespans=torch.full((5,), 10e-3))
    torch.testing.assert_close(same, logits)
    other, _ = m(x, timespans=torch.tensor([1e-3, 30e-3, 5e-3, 10e-3, 50e-3]))
    assert not torch.allclose(other, logits)
    logits.sum().backward()


def test_ncp_masks_are_respected_by_gradients():
    m = LTCNet(5, 2, cell="ltc", wiring="ncp", sensory=6, inter=8, command=5, motor=3,
               ode_unfolds=2)
    layer = m.layers[0]
    m(torch.rand(4, 2, 5))[0].sum().backward()
    # masked synapses get exactly zero gradient (they do not exist)
    assert (layer.w_raw.grad[m.ncp_recurrent == 0] == 0).all()
    assert (layer.sensory_w_raw.grad[m.ncp_sensory == 0] == 0).all()
    cfc = LTCNet(5, 2, cell="cfc", wiring="ncp", sensory=6, inter=8, command=5, motor=3,
                 backbone_layers=0)
    cfc(torch.rand(4, 2, 5))[0].sum().backward()
    lay = cfc.layers[1]  # command group: inputs are the inter neurons
    w = lay.f.parametrizations.weight.original
    mask = lay.f.parametrizations.weight[0].mask
    assert (w.grad[mask == 0] == 0).all() and (w.grad[mask != 0] != 0).any()


def test_validation():
    with pytest.raises(ValueError, match="cell must be"):
        LTCNet(5, 2, cell="gru")
    with pytest.raises(ValueError, match="wiring must be"):
        LTCNet(5, 2, wiring="random")


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_learns_nmnist_digits_beyond_chance(shared_data, cell):
    from tests.models.test_egru_model import fit, nmnist_two_digits

    torch.manual_seed(0)
    xtr, ytr, xte, yte = nmnist_two_digits(shared_data)
    m = LTCNet((2, 8, 8), 2, cell=cell, units=12, sensory=12, dt=30e-3, ode_unfolds=2,
               backbone_units=16)
    fit(m, xtr, ytr, steps=30, lr=1e-2)
    with torch.no_grad():
        logits, _ = m(xte)
    assert float((logits.argmax(1) == yte).float().mean()) >= 0.8  # chance 0.5


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_input_batchnorm_folds_into_the_sensory_projection(cell):
    torch.manual_seed(0)
    x = (torch.rand(10, 16, 12) < 0.1).double()
    kw = dict(cell=cell, units=6, sensory=5, ode_unfolds=2)
    normed = LTCNet(12, 3, input_norm="batchnorm", **kw).double().train()
    normed(x)                                                # running statistics from a batch
    with torch.no_grad():
        normed.norm.weight.uniform_(0.5, 2.0)
        normed.norm.bias.uniform_(-0.5, 0.5)
    normed.eval()
    plain = LTCNet(12, 3, **kw).double().eval()
    plain.load_state_dict(normed.state_dict(), strict=False)
    fold_batchnorm(plain.sensory, normed.norm)
    torch.testing.assert_close(plain(x)[0], normed(x)[0])
    assert not torch.allclose(LTCNet(12, 3, **kw).double().eval()(x)[0], normed(x)[0])
    with pytest.raises(ValueError, match="input_norm"):
        LTCNet(12, 3, input_norm="layer")


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_input_pool_equals_feeding_pooled_channels(cell):
    from spiking.models.pooling import sum_pool

    torch.manual_seed(0)
    pooled = LTCNet((700,), 4, cell=cell, units=6, sensory=5, ode_unfolds=2, input_pool=5)
    assert pooled.sensory.in_features == 140
    plain = LTCNet((140,), 4, cell=cell, units=6, sensory=5, ode_unfolds=2)
    plain.load_state_dict(pooled.state_dict())
    x = (torch.rand(6, 3, 700) < 0.05).float()
    torch.testing.assert_close(pooled(x)[0], plain(sum_pool(x, (700,), 5))[0])
    with pytest.raises(ValueError, match="input_pool must be"):
        LTCNet((700,), 4, cell=cell, input_pool=0)
