"""state_dict / load_state_dict: bit-exact resume, and refusals on mismatch."""
import pytest
import torch

import mlorc
from helpers import assert_bitwise_equal, mlp, regression_data, save_and_load, states, train

SIZES = [32, 64, 48, 10]  # two low-rank matrices at rank 4 (min dim >= 16), a dense head


def make(rule, seed=0, sizes=SIZES, **kwargs):
    model = mlp(sizes, seed=seed)
    cls = mlorc.torch.AdamW if rule == "adamw" else mlorc.torch.Lion
    opt = cls(model.parameters(), lr=1e-3, **kwargs)
    return model, opt


@pytest.mark.parametrize("rule", ["adamw", "lion"])
def test_resume_is_bit_exact(rule):
    x, y = regression_data(64, SIZES[0], SIZES[-1])
    model, opt = make(rule, rank=4)
    train(model, opt, x, y, 20)

    checkpoint = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed_model, resumed_opt = make(rule, seed=123, rank=4)  # other weights until loaded
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["opt"])

    train(model, opt, x, y, 15)
    train(resumed_model, resumed_opt, x, y, 15)
    assert_bitwise_equal(resumed_model.parameters(), model.parameters())
    assert_bitwise_equal(states(resumed_opt, resumed_model), states(opt, model))
    kinds = [mlorc.inspect_state(s.numpy())["storage"] for s in states(opt, model)]
    assert kinds == ["lowrank", "dense", "lowrank", "dense", "dense", "dense"]
    assert mlorc.inspect_state(states(opt, model)[0].numpy())["step"] == 35


def test_state_is_uint8_tensor_shared_with_numpy():
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    model, opt = make("adamw")
    train(model, opt, x, y, 1)
    tensor = opt.state[model[0].weight]["mlorc_state"]
    assert tensor.dtype == torch.uint8 and tensor.dim() == 1
    array = tensor.numpy()
    array[0] ^= 0  # same memory: a write through numpy is a write to the tensor
    assert array.ctypes.data == tensor.data_ptr()
    packed = opt.state_dict()["state"][0]
    assert set(packed) == {"mlorc_state"}


def test_loaded_states_are_private_copies():
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    model, opt = make("adamw")
    train(model, opt, x, y, 2)
    saved = opt.state_dict()
    _, other = make("adamw")
    other.load_state_dict(saved)
    for a, b in zip(states(opt, model), [other.state[p]["mlorc_state"] for p in other.param_groups[0]["params"]]):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def _expect_refused(opt, state_dict, match):
    before = {k: v.clone() for k, v in
              ((i, opt.state[p]["mlorc_state"]) for i, p in enumerate(opt.param_groups[0]["params"])
               if "mlorc_state" in opt.state[p])}
    groups_before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state_dict)
    after = {i: opt.state[p]["mlorc_state"] for i, p in enumerate(opt.param_groups[0]["params"])
             if "mlorc_state" in opt.state[p]}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert groups_before == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def _trained(rule, sizes=SIZES, steps=2, **kwargs):
    model, opt = make(rule, sizes=sizes, **kwargs)
    x, y = regression_data(8, sizes[0], sizes[-1])
    train(model, opt, x, y, steps)
    return model, opt


def test_load_refuses_state_of_another_shape():
    _, source = _trained("adamw", sizes=[32, 40, 48, 10])
    model, opt = _trained("adamw")
    _expect_refused(opt, save_and_load(source.state_dict()), "40x32 tensor, but the parameter is 64x32")


def test_load_refuses_state_of_another_rank():
    _, source = _trained("adamw", rank=8)
    _, opt = _trained("adamw", rank=4)
    _expect_refused(opt, save_and_load(source.state_dict()), "rank=8")
    # Even with the group's value doctored, the state itself tells its rank.
    doctored = save_and_load(source.state_dict())
    doctored["param_groups"][0]["rank"] = 4
    _expect_refused(opt, doctored, "has rank 8")


def test_load_refuses_state_of_another_rule():
    _, source = _trained("lion")
    _, opt = _trained("adamw")
    _expect_refused(opt, save_and_load(source.state_dict()), "belongs to rule lion")


def test_load_refuses_other_storage_policy():
    _, source = _trained("adamw", compress=False)
    _, opt = _trained("adamw")
    _expect_refused(opt, save_and_load(source.state_dict()), "is dense, but")


@pytest.mark.parametrize("where", [40, 300], ids=["header", "factors"])
def test_load_refuses_corrupted_state(where):
    _, opt = _trained("adamw")
    saved = save_and_load(opt.state_dict())
    saved["state"][0]["mlorc_state"][where] ^= 0x10
    _expect_refused(opt, saved, "corrupted")


def test_load_refuses_non_mlorc_state():
    _, opt = _trained("adamw")
    saved = save_and_load(opt.state_dict())
    saved["state"][0] = {"exp_avg": torch.zeros(64, 32)}
    _expect_refused(opt, saved, "not an mlorc state")


def test_load_into_fresh_optimizer_then_step():
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    model, opt = _trained("adamw")
    fresh_model, fresh = make("adamw")
    fresh_model.load_state_dict(model.state_dict())
    fresh.load_state_dict(save_and_load(opt.state_dict()))
    train(fresh_model, fresh, x, y, 1)
    assert mlorc.inspect_state(states(fresh, fresh_model)[0].numpy())["step"] == 3


def _same_shape_pair(seed=0):
    """Two 16x16 layers: their states fit each other's parameters by shape."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))


def test_load_refuses_named_parameters_in_another_order():
    x, y = regression_data(8, 16, 16)
    model = _same_shape_pair()
    source = mlorc.torch.AdamW(model.named_parameters(), lr=1e-2, rank=2, compress=True)
    train(model, source, x, y, 2)
    saved = save_and_load(source.state_dict())
    swapped = _same_shape_pair()
    named = list(swapped.named_parameters())
    opt = mlorc.torch.AdamW(named[2:] + named[:2], lr=1e-2, rank=2, compress=True)  # layer 2 first
    train(swapped, opt, x, y, 1)
    _expect_refused(opt, saved, "position 0 holds '0.weight' in the checkpoint but '2.weight'")
    # The same names in the same order load.
    same = mlorc.torch.AdamW(_same_shape_pair().named_parameters(), lr=1e-2, rank=2, compress=True)
    same.load_state_dict(saved)
    assert [mlorc.inspect_state(same.state[p]["mlorc_state"])["step"] for p in same.param_groups[0]["params"]] \
        == [2, 2, 2, 2]
