"""mlorc.torch.AdamW / Lion against the dense optimizers they generalise."""
import pytest
import torch

import mlorc
from helpers import backward, mlp, regression_data, twin

SIZES = [8, 16, 12, 4]
STEPS = 60


def full_rank_groups(model, compress):
    """One group per tensor so that each matrix gets rank = min(rows, cols)."""
    groups = []
    for p in model.parameters():
        if p.dim() == 2:
            groups.append({"params": [p], "rank": min(p.shape), "compress": compress})
        else:
            groups.append({"params": [p], "compress": False})
    return groups


def storages(opt, model):
    return [mlorc.inspect_state(opt.state[p]["mlorc_state"].numpy())["storage"] for p in model.parameters()]


@pytest.mark.parametrize("compress", [None, "lowrank"], ids=["auto-dense", "forced-lowrank"])
def test_full_rank_adamw_follows_torch_adamw(compress):
    reference_model = mlp(SIZES)
    model = twin(reference_model)
    x, y = regression_data(64, SIZES[0], SIZES[-1])
    lr, hyper = 1e-2, dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    reference = torch.optim.AdamW(reference_model.parameters(), lr=lr, **hyper)
    opt = mlorc.torch.AdamW(full_rank_groups(model, compress), lr=lr, **hyper)
    worst = 0.0
    for _ in range(STEPS):
        for m, o in ((reference_model, reference), (model, opt)):
            o.zero_grad()
            backward(m, x, y)
            o.step()
        worst = max(worst, max((a - b).abs().max().item()
                               for a, b in zip(reference_model.parameters(), model.parameters())))
    expected = ["dense"] * 6 if compress is None else ["lowrank", "dense"] * 3
    assert storages(opt, model) == expected
    if compress is None:
        # Dense storage is AdamW itself; only rounding differs (β-mix vs lerp,
        # fused multiply-adds), a few ulps of |w| <= 1 (ulp 1.2e-7) per step.
        assert worst < 1e-5
    else:
        # At full rank the factors hold M and V exactly up to float32 rounding
        # of the randomized SVD (relative ~1e-6 of the largest entry). For
        # entries of V far below the largest, that error is a noticeable part
        # of sqrt(V), so single elements can move by a small fraction of one
        # step (lr); it must stay far below one step.
        assert worst < 0.02 * lr


def test_adamw_steps_match_step_by_step_with_groups_of_different_rank():
    """With its own lr, weight decay and betas per group, each dense group is
    exactly torch.optim.AdamW with those values (checked every step)."""
    reference_model = mlp(SIZES)
    model = twin(reference_model)
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    (w0, b0, w1, b1, w2, b2) = model.parameters()
    (rw0, rb0, rw1, rb1, rw2, rb2) = reference_model.parameters()
    opt = mlorc.torch.AdamW([
        {"params": [w0, b0], "lr": 3e-3, "weight_decay": 0.0},
        {"params": [w1, b1, w2, b2], "lr": 1e-2, "betas": (0.8, 0.95)},
    ], compress=False)
    reference = torch.optim.AdamW([
        {"params": [rw0, rb0], "lr": 3e-3, "weight_decay": 0.0},
        {"params": [rw1, rb1, rw2, rb2], "lr": 1e-2, "betas": (0.8, 0.95)},
    ])
    for _ in range(STEPS):
        for m, o in ((reference_model, reference), (model, opt)):
            o.zero_grad()
            backward(m, x, y)
            o.step()
        for a, b in zip(reference_model.parameters(), model.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


class ReferenceLion:
    """Dense Lion as the paper writes it, in torch float32 ops."""

    def __init__(self, params, lr, betas, weight_decay):
        self.params, self.lr, self.betas, self.wd = list(params), lr, betas, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        for p, m in zip(self.params, self.m):
            g = p.grad
            direction = torch.sign(beta1 * m + (1 - beta1) * g)
            p.mul_(1 - self.lr * self.wd).add_(direction, alpha=-self.lr)
            m.mul_(beta2).add_((1 - beta2) * g)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def test_dense_lion_follows_reference_lion():
    reference_model = mlp(SIZES)
    model = twin(reference_model)
    x, y = regression_data(64, SIZES[0], SIZES[-1])
    hyper = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1)
    reference = ReferenceLion(reference_model.parameters(), **hyper)
    opt = mlorc.torch.Lion(model.parameters(), compress=False, **hyper)
    for _ in range(STEPS):
        for m, o in ((reference_model, reference), (model, opt)):
            o.zero_grad()
            backward(m, x, y)
            o.step()
        # A sign never flips on rounding alone here (no update direction is
        # within an ulp of zero), so only the decay product's rounding differs.
        for a, b in zip(reference_model.parameters(), model.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    assert storages(opt, model) == ["dense"] * 6


def test_low_rank_lion_first_step_is_exact_sign_step():
    """Lion's first step uses m = 0, whatever the storage: w(1 - lr·λ) - lr·sign(g)."""
    model = mlp([32, 32, 4])
    before = [p.detach().clone() for p in model.parameters()]
    x, y = regression_data(16, 32, 4)
    opt = mlorc.torch.Lion(model.parameters(), lr=1e-3, weight_decay=0.5, compress=True)
    backward(model, x, y)
    opt.step()
    assert storages(opt, model)[0] == "lowrank"
    for p, w in zip(model.parameters(), before):
        torch.testing.assert_close(p, w * (1 - 1e-3 * 0.5) - 1e-3 * torch.sign(p.grad), rtol=0, atol=1e-7)
