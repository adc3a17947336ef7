"""Small models, data and loops shared by the tests."""
import copy
import io

import torch


def mlp(sizes, seed=0):
    """A tanh MLP: smooth, so no gradient is exactly zero (AdamW comparisons
    stay well conditioned)."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def regression_data(n, d_in, d_out, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_out, generator=g)


def backward(model, x, y):
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss


def train(model, opt, x, y, steps, scheduler=None):
    """Full-batch steps; one scheduler step after each optimizer step."""
    for _ in range(steps):
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
        if scheduler is not None:
            scheduler.step()


def twin(model):
    return copy.deepcopy(model)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_bitwise_equal(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and torch.equal(x, y)


def save_and_load(obj):
    """A torch.save / torch.load(weights_only=True) round trip in memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def states(opt, model):
    return [opt.state[p]["mlorc_state"] for p in model.parameters()]
