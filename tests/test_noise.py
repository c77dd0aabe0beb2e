"""Noise schedules (docs/math.md §2): σ̄ and σ̇ of the log-linear and geometric schedules."""

import math

import pytest
import torch

from sedd.core.noise import Geometric, LogLinear, get_noise


@pytest.mark.parametrize("noise", [LogLinear(), LogLinear(0.0), LogLinear(0.05), Geometric(),
                                   Geometric(1e-3, 7.5)], ids=repr)
def test_rate_is_the_derivative_of_the_total(noise):
    t = torch.linspace(0.01, 0.98, 41, dtype=torch.float64)
    h = 1e-6
    numeric = (noise.total(t + h) - noise.total(t - h)) / (2 * h)
    torch.testing.assert_close(noise.rate(t), numeric, rtol=1e-6, atol=0)
    assert bool((noise.rate(t) > 0).all())


def test_end_points():
    ll = LogLinear(1e-3)
    assert float(ll.total(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    assert math.isclose(float(ll.total(torch.tensor(1.0, dtype=torch.float64))), -math.log(1e-3),
                        rel_tol=1e-12)
    assert ll.sigma_max == -math.log(1e-3) and LogLinear(0.0).sigma_max == math.inf
    g = Geometric(1e-4, 20.0)
    assert math.isclose(float(g.total(torch.tensor(0.0))), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(g.total(torch.tensor(1.0))), 20.0, rel_tol=1e-6)
    # the log-linear schedule masks a token with probability (1 − ε)t by time t
    t = torch.tensor([0.25, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(1 - torch.exp(-ll.total(t)), (1 - 1e-3) * t)


@pytest.mark.parametrize("make, match", [
    (lambda: LogLinear(1.0), "eps must be in"), (lambda: LogLinear(-0.1), "eps must be in"),
    (lambda: Geometric(1.0, 0.5), "sigma_min < sigma_max"), (lambda: Geometric(0.0, 1.0), "0 < sigma_min"),
    (lambda: get_noise("cosine"), "noise must be 'loglinear' or 'geometric'")])
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()
