"""torch.optim.AdamW's flags on mlorc.torch.AdamW: the defaults are accepted,
maximize works (and leaves p.grad alone), other values are refused."""
import pytest
import torch

import mlorc
from helpers import assert_bitwise_equal, backward, mlp, params_of, regression_data, states, twin

SIZES = [32, 64, 48, 10]
TORCH_DEFAULTS = dict(amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
                      fused=None)


def test_torch_defaults_are_accepted_and_change_nothing():
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    plain = twin(model)
    opts = [mlorc.torch.AdamW(model.parameters(), 1e-2, (0.9, 0.999), 1e-8, 0.01, False, **{
                k: v for k, v in TORCH_DEFAULTS.items() if k != "amsgrad"}),  # amsgrad positional, as torch's
            mlorc.torch.AdamW(plain.parameters(), lr=1e-2)]
    for _ in range(3):
        for m, o in zip((model, plain), opts):
            o.zero_grad()
            backward(m, x, y)
            o.step()
    assert_bitwise_equal(model.parameters(), plain.parameters())
    group = opts[0].param_groups[0]
    assert {k: group[k] for k in TORCH_DEFAULTS} == TORCH_DEFAULTS  # in the groups, as torch keeps them
    mlorc.torch.AdamW(mlp(SIZES).parameters(), foreach=False, fused=False)  # "not foreach / not fused": fine


@pytest.mark.parametrize("flag, value", [("amsgrad", True), ("foreach", True), ("fused", True),
                                         ("capturable", True), ("differentiable", True)])
def test_other_values_are_refused(flag, value):
    with pytest.raises(ValueError, match=f"{flag}={value!r} is not supported"):
        mlorc.torch.AdamW(mlp(SIZES).parameters(), **{flag: value})
    with pytest.raises(ValueError, match=f"parameter group 1: {flag}={value!r}"):
        model = mlp(SIZES)
        mlorc.torch.AdamW([{"params": model[0].parameters()}, {"params": model[2].parameters(), flag: value}])
    # Set in a group later: refused at the step, which changes nothing.
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2)
    backward(model, *regression_data(4, SIZES[0], SIZES[-1]))
    before = params_of(model)
    opt.param_groups[0][flag] = value
    with pytest.raises(ValueError, match=flag):
        opt.step()
    assert_bitwise_equal(model.parameters(), before)


def test_maximize_follows_torch_adamw_maximize():
    """Dense storage is AdamW itself: within the rounding bound of the parity
    tests (a few ulps of |w| <= 1 per step, test_torch_parity.py)."""
    reference_model = mlp(SIZES)
    model = twin(reference_model)
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, maximize=True)
    reference = torch.optim.AdamW(reference_model.parameters(), **hyper)
    opt = mlorc.torch.AdamW(model.parameters(), compress=False, **hyper)
    losses = []
    for _ in range(30):
        for m, o in ((reference_model, reference), (model, opt)):
            o.zero_grad()
            loss = backward(m, x, y)
            o.step()
        losses.append(loss.item())
    worst = max((a - b).abs().max().item() for a, b in zip(reference_model.parameters(), model.parameters()))
    assert worst < 1e-5
    assert losses[-1] > 2 * losses[0]  # it really ascends


def test_maximize_is_the_step_on_the_negated_gradient_and_keeps_grad():
    """Bit for bit, maximize=True with g is maximize=False with -g, for
    low-rank states too; p.grad is left untouched (even a non-contiguous one)."""
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    negated = twin(model)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, rank=4, maximize=True)
    negated_opt = mlorc.torch.AdamW(negated.parameters(), lr=1e-2, rank=4)
    for step in range(4):
        opt.zero_grad()
        backward(model, x, y)
        if step == 1:
            model[2].weight.grad = model[2].weight.grad.t().contiguous().t()  # non-contiguous grad
        grads = [p.grad.clone() for p in model.parameters()]
        for p, q in zip(model.parameters(), negated.parameters()):
            q.grad = -p.grad
        opt.step()
        negated_opt.step()
        assert_bitwise_equal([p.grad for p in model.parameters()], grads)
    assert_bitwise_equal(model.parameters(), negated.parameters())
    assert_bitwise_equal(states(opt, model), states(negated_opt, negated))
    assert [mlorc.inspect_state(s)["storage"] for s in states(opt, model)].count("lowrank") == 2
