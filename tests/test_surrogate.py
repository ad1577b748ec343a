import math

import pytest
import torch

from spiking import surrogate

BUILTINS = ["atan", "fast_sigmoid", "sigmoid", "triangle", "straight_through"]


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("alpha", [None, 0.7, 4.0])
def test_backward_matches_finite_difference_of_primitive(name, alpha):
    sg = surrogate.get(name, alpha)
    # points avoiding the kinks of the piecewise surrogates (|x| = 1/alpha) and x = 0
    x = torch.linspace(-2.0, 2.0, 81, dtype=torch.float64) + 0.0123
    kink = 1.0 / sg.alpha
    x = x[(x.abs() - kink).abs() > 1e-3]
    x.requires_grad_(True)
    y = sg(x)
    assert torch.equal(y.detach(), (x.detach() > 0).double())  # forward is the Heaviside
    (g,) = torch.autograd.grad(y.sum(), x)
    eps = 1e-6
    xd = x.detach()
    fd = (sg.primitive(xd + eps) - sg.primitive(xd - eps)) / (2 * eps)
    err = (g - fd).abs().max().item()
    print(f"{name}(alpha={sg.alpha}): max |autograd - finite difference| = {err:.2e}")
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


def test_atan_peak_value():
    # g(0) = alpha / 2 by the documented formula (snnTorch's ATan, alpha = 2 -> 1)
    x = torch.zeros(1, requires_grad=True)
    surrogate.get("atan")(x).backward()
    assert x.grad.item() == pytest.approx(1.0)


def test_alias_and_errors():
    assert surrogate.get("superspike").name == "fast_sigmoid"
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        surrogate.get("nope")
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        surrogate.get("atan", -1.0)
    with pytest.raises(ValueError, match="already registered"):
        surrogate.register("atan", lambda x, a: x)


def test_register_custom_surrogate():
    name = "gauss_test"
    surrogate.register(name, lambda x, a: torch.exp(-(a * x) ** 2) * a / math.sqrt(math.pi),
                       lambda x, a: torch.erf(a * x) / 2, default_alpha=3.0, overwrite=True)
    sg = surrogate.get(name)
    assert sg.kernel_id is None and sg.alpha == 3.0
    x = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    sg(x).sum().backward()
    expected = torch.exp(-(3.0 * x.detach()) ** 2) * 3.0 / math.sqrt(math.pi)
    torch.testing.assert_close(x.grad, expected)
