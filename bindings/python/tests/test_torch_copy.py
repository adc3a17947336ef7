"""copy.deepcopy, pickle and torch.save of an optimizer give a working one:
native handles re-created from the groups' settings, states carried; the
copy steps bit for bit as the original does."""
import copy
import io
import pickle

import pytest
import torch

import mlorc
from helpers import assert_bitwise_equal, backward, mlp, regression_data, states, train

SIZES = [32, 64, 48, 10]  # two low-rank matrices at rank 4, dense vectors and head


def via(how, obj):
    if how == "deepcopy":
        return copy.deepcopy(obj)
    if how == "pickle":
        return pickle.loads(pickle.dumps(obj))
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


HOWS = ["deepcopy", "pickle", "torch.save"]
OPTIMIZERS = {
    "adamw": lambda params: mlorc.torch.AdamW(params, lr=1e-2, rank=4),
    "prodigy": lambda params: mlorc.torch.Prodigy(params, lr=1.0, rank=4),  # + a group state
    "lion-2-groups": lambda params: mlorc.torch.Lion(
        [{"params": params[:2]}, {"params": params[2:], "compress": False, "betas": (0.9, 0.99)}], lr=1e-3),
}


def all_states(opt):
    return [opt.state[p]["mlorc_state"] for g in opt.param_groups for p in g["params"]]


def assert_private(a, b):
    """No parameter or state memory shared: stepping one cannot move the other."""
    pa = [p.data_ptr() for g in a.param_groups for p in g["params"]] + [s.data_ptr() for s in all_states(a)]
    pb = [p.data_ptr() for g in b.param_groups for p in g["params"]] + [s.data_ptr() for s in all_states(b)]
    assert not set(pa) & set(pb)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_copied_model_and_optimizer_train_as_the_original(how, kind):
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = OPTIMIZERS[kind](list(model.parameters()))
    train(model, opt, x, y, 3)
    copied = via(how, {"model": model, "opt": opt})
    copied_model, copied_opt = copied["model"], copied["opt"]
    assert type(copied_opt) is type(opt) and len(copied_opt._handles) == len(opt.param_groups)
    assert_private(opt, copied_opt)
    # The copied optimizer steps the copied model's parameters (one object graph).
    assert [p for g in copied_opt.param_groups for p in g["params"]] == list(copied_model.parameters())

    train(model, opt, x, y, 4)
    train(copied_model, copied_opt, x, y, 4)
    assert_bitwise_equal(copied_model.parameters(), model.parameters())
    assert_bitwise_equal(states(copied_opt, copied_model), states(opt, model))
    assert [g.get("d") for g in copied_opt.param_groups] == [g.get("d") for g in opt.param_groups]
    assert mlorc.inspect_state(states(opt, model)[0])["step"] == 7


@pytest.mark.parametrize("how", HOWS)
def test_copied_optimizer_alone_steps_its_own_parameters(how):
    """copy.deepcopy(opt) copies the parameters too: fed the same gradients,
    the copy's parameters follow the original's exactly."""
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.named_parameters(), lr=1e-2, rank=4)
    train(model, opt, x, y, 2)
    copied = via(how, opt)
    assert_private(opt, copied)
    copied_params = copied.param_groups[0]["params"]
    assert copied._names[copied_params[2]] == "2.weight"  # bookkeeping follows the copied params
    for _ in range(3):
        opt.zero_grad()
        backward(model, x, y)
        for p, q in zip(model.parameters(), copied_params):
            q.grad = p.grad.clone()
        opt.step()
        copied.step()
    assert_bitwise_equal(copied_params, model.parameters())
    assert_bitwise_equal(all_states(copied), all_states(opt))


def test_copy_before_the_first_step_and_state_dict_of_the_copy():
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2)
    copied = copy.deepcopy({"model": model, "opt": opt})
    train(model, opt, x, y, 2)
    train(copied["model"], copied["opt"], x, y, 2)
    assert_bitwise_equal(copied["model"].parameters(), model.parameters())
    fresh_model = mlp(SIZES)
    fresh = mlorc.torch.AdamW(fresh_model.parameters(), lr=1e-2)
    fresh.load_state_dict(copied["opt"].state_dict())  # a copy's checkpoint is an ordinary one
    assert_bitwise_equal(all_states(fresh), all_states(opt))
