import pytest
import torch
from torch import nn

import spiking


def test_sequential_matches_manual_composition():
    lin1, lif1 = nn.Linear(4, 8), spiking.LIF(backend="reference")
    lin2, li = nn.Linear(8, 3), spiking.LI(backend="reference")
    seq = spiking.Sequential(lin1, lif1, lin2, li)
    x = torch.rand(30, 5, 4)
    out, states, layers = seq(x, record=True)
    s1, st1 = lif1(lin1(x))
    v, st2 = li(lin2(s1))
    torch.testing.assert_close(out, v)
    assert states[0] is None and states[2] is None
    torch.testing.assert_close(states[1].v, st1.v)
    assert torch.equal(layers[1], s1)
    # carrying the state over a split sequence gives the same result
    o1, sts = seq(x[:10])
    o2, _ = seq(x[10:], sts)
    torch.testing.assert_close(torch.cat([o1, o2]), out)


def test_sequential_conv_layers_fold_time():
    seq = spiking.Sequential(nn.Conv2d(2, 4, 3), spiking.LIF(backend="reference"), nn.Flatten())
    out, _ = seq(torch.rand(6, 3, 2, 10, 10))
    assert out.shape == (6, 3, 4 * 8 * 8)


def test_sequential_errors():
    seq = spiking.Sequential(nn.Linear(4, 2), spiking.LIF())
    with pytest.raises(ValueError, match=r"rank >= 3.*\(5, 4\)"):
        seq(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="states has 1 entries, expected one per layer \\(2\\)"):
        seq(torch.zeros(3, 5, 4), (None,))
