"""Tensor ids from parameter names: the same whichever way the optimizer is
built (named parameters, mlorc.torch.named, param groups in any order), so
results and checkpoints do not depend on it; position ids without names, and
checkpoints written with position ids still load."""
import hashlib

import pytest
import torch

import mlorc
from mlorc.torch import tensor_ids
from helpers import assert_bitwise_equal, mlp, regression_data, save_and_load, states, train, twin

SIZES = [32, 64, 48, 10]  # two low-rank matrices at rank 4: their sketches are keyed by the tensor id


def ids_of(opt, params):
    return [mlorc.inspect_state(opt.state[p]["mlorc_state"])["tensor_id"] for p in params]


def test_name_ids_are_the_documented_hash():
    for name in ["0.weight", "encoder.layer.0.attention.self.query.weight", "ünïcode.w", ""]:
        digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
        expected = 2 ** 52 + int.from_bytes(digest, "little") % 2 ** 52
        assert tensor_ids.name_id(name) == expected
        assert 2 ** 52 <= expected < 2 ** 53 and float(expected) == expected  # float64-exact
        assert tensor_ids.is_name_id(expected)
    # Frozen: a change here would make every saved named checkpoint unloadable.
    assert tensor_ids.name_id("0.weight") == 6000039765768422
    assert tensor_ids.tensor_id(5) == 5 and not tensor_ids.is_name_id(5)


def test_every_way_of_naming_gives_the_same_ids():
    model = mlp(SIZES)
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    names = [name for name, _ in model.named_parameters()]
    expected = [tensor_ids.name_id(name) for name in names]

    def ids_after_one_step(model, opt):
        train(model, opt, x, y, 1)
        return ids_of(opt, model.parameters())

    by_pairs = twin(model)
    assert ids_after_one_step(by_pairs, mlorc.torch.AdamW(by_pairs.named_parameters(), lr=1e-2)) == expected
    by_helper = twin(model)
    assert ids_after_one_step(by_helper, mlorc.torch.AdamW(mlorc.torch.named(by_helper), lr=1e-2)) == expected
    # Wrappers prefix the names ("module.", "_orig_mod."); named() names the model inside.
    wrapped = twin(model)
    mlorc.torch.named(torch.compile(torch.nn.DataParallel(wrapped), backend="eager"))
    assert ids_after_one_step(wrapped, mlorc.torch.AdamW(wrapped.parameters(), lr=1e-2)) == expected
    # Groups in another order: every parameter keeps its id.
    regrouped = twin(model)
    pairs = list(regrouped.named_parameters())
    opt = mlorc.torch.AdamW([{"params": pairs[4:] + pairs[:1]}, {"params": pairs[1:4][::-1]}], lr=1e-2)
    assert ids_after_one_step(regrouped, opt) == expected
    # Without names: positions, as before.
    plain = twin(model)
    assert ids_after_one_step(plain, mlorc.torch.AdamW(plain.parameters(), lr=1e-2)) == list(range(6))


def test_named_results_do_not_depend_on_the_parameter_order():
    """What ZeroRedundancyOptimizer does to each rank's optimizer (a subset of
    the parameters, in another order) in one process: named parameters in
    another order and other groups give the same weights bit for bit; with
    positions they would not (the control)."""
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.named_parameters(), lr=1e-2, rank=4)
    reordered, by_position = twin(model), twin(model)
    pairs = list(reordered.named_parameters())
    reordered_opt = mlorc.torch.AdamW([{"params": pairs[2:][::-1]}, {"params": pairs[:2]}], lr=1e-2, rank=4)
    params = list(by_position.parameters())
    by_position_opt = mlorc.torch.AdamW([{"params": params[2:][::-1]}, {"params": params[:2]}], lr=1e-2, rank=4)
    for m, o in [(model, opt), (reordered, reordered_opt), (by_position, by_position_opt)]:
        train(m, o, x, y, 8)
    assert [mlorc.inspect_state(s)["storage"] for s in states(opt, model)].count("lowrank") == 2
    assert_bitwise_equal(reordered.parameters(), model.parameters())
    assert_bitwise_equal(states(reordered_opt, reordered), states(opt, model))
    assert not torch.equal(by_position[0].weight, model[0].weight)  # ids matter: the test can fail


def test_names_that_cannot_identify_parameters_are_refused():
    model = mlp(SIZES)
    with pytest.raises(ValueError, match="two parameters are named 'weight'"):
        mlorc.torch.AdamW([{"params": model[0].named_parameters()}, {"params": model[2].named_parameters()}])
    with pytest.raises(ValueError, match="has 2 parameters but 6 param_names"):
        mlorc.torch.AdamW([{"params": list(model[0].parameters()),
                            "param_names": [name for name, _ in model.named_parameters()]}])
    with pytest.raises(TypeError, match="the name of parameter 0 is a int, not a str"):
        mlorc.torch.AdamW([(0, model[0].weight)])
    mlorc.torch.named(model)
    wrapper = torch.nn.Sequential(model)
    with pytest.raises(ValueError, match="parameter '0.0.weight' was named '0.weight' by mlorc.torch.named"):
        mlorc.torch.AdamW(wrapper.named_parameters())
    with pytest.raises(TypeError, match="named\\(\\) takes a torch.nn.Module"):
        mlorc.torch.named(model.parameters())


def test_colliding_name_hashes_are_refused(monkeypatch):
    monkeypatch.setattr(tensor_ids, "name_id", lambda name: tensor_ids.NAME_IDS_START + len(name))
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="parameters 'ab' and 'cd' have the same tensor id"):
        mlorc.torch.AdamW([("ab", a), ("cd", b)])


def test_compress_sets_work_with_named():
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(mlorc.torch.named(model), lr=1e-2, rank=4, compress={"2.weight"})
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    train(model, opt, x, y, 1)
    assert [mlorc.inspect_state(s)["storage"] for s in states(opt, model)] == \
        ["dense", "dense", "lowrank", "dense", "dense", "dense"]


# ----------------------------------------------------------- checkpoints

def _trained(model, params, steps=3, **kwargs):
    opt = mlorc.torch.AdamW(params, lr=1e-2, rank=4, **kwargs)
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    train(model, opt, x, y, steps)
    return opt


def test_position_id_checkpoint_resumes_in_named_optimizer():
    """States keep the ids they were made with: a checkpoint of an optimizer
    without names continues bit-exactly in one built with names."""
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = _trained(model, model.parameters())
    saved = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    resumed = mlp(SIZES, seed=5)
    resumed.load_state_dict(saved["model"])
    resumed_opt = mlorc.torch.AdamW(resumed.named_parameters(), lr=1e-2, rank=4)
    resumed_opt.load_state_dict(saved["opt"])
    train(model, opt, x, y, 4)
    train(resumed, resumed_opt, x, y, 4)
    assert_bitwise_equal(resumed.parameters(), model.parameters())
    assert ids_of(resumed_opt, resumed.parameters()) == list(range(6))
    # A parameter added later gets a name id; the old states keep theirs.
    extra = torch.nn.Parameter(torch.zeros(16, 16))
    resumed_opt.add_param_group({"params": [("extra", extra)]})
    extra.grad = torch.ones(16, 16)
    resumed_opt.step()
    assert ids_of(resumed_opt, [extra]) == [tensor_ids.name_id("extra")]


def _same_shape_pair(seed=0):
    """Two 16x16 layers: their states fit each other's parameters by shape."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))


def _pair_opt(params, model):
    opt = mlorc.torch.AdamW(params, lr=1e-2, rank=2, compress=True)
    x, y = regression_data(8, 16, 16)
    train(model, opt, x, y, 1)
    return opt


def _expect_refused(opt, model, saved, match):
    before = [s.clone() for s in states(opt, model)]
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saved)
    assert_bitwise_equal(states(opt, model), before)


def test_load_refuses_states_of_other_parameters():
    named_model = _same_shape_pair()
    by_name = save_and_load(_pair_opt(named_model.named_parameters(), named_model).state_dict())

    # What a rank of ZeroRedundancyOptimizer without names saves: ids are
    # positions in its own subset ([2.weight, 2.bias] here), states are
    # re-indexed to the global order by consolidate_state_dict.
    partition = _same_shape_pair()
    local = _pair_opt(list(partition[2].parameters()), partition)
    consolidated = save_and_load(local.state_dict())
    consolidated["state"] = {index + 2: entry for index, entry in consolidated["state"].items()}
    consolidated["param_groups"][0]["params"] = [0, 1, 2, 3]
    plain = _same_shape_pair()
    _expect_refused(_pair_opt(plain.parameters(), plain), plain, consolidated,
                    "checkpoint state of parameter 2 has tensor id 0, the id of position 0 in an optimizer built "
                    "without names, but the parameter is at position 2 here")
    # Name ids into an optimizer without names.
    unnamed = _same_shape_pair()
    _expect_refused(_pair_opt(unnamed.parameters(), unnamed), unnamed, by_name,
                    "the id of a named parameter, but this optimizer does not know")
    # Name ids, names given by named() (so none saved in the groups to compare), another order.
    tagged = _same_shape_pair()
    params = mlorc.torch.named(tagged)
    without_names = save_and_load(by_name)
    for group in without_names["param_groups"]:
        del group["param_names"]
    _expect_refused(_pair_opt(params[2:] + params[:2], tagged), tagged, without_names,
                    "checkpoint state of parameter '2.weight' has tensor id .* but '2.weight' has id .*: "
                    "it is the state of parameter '0.weight'")


def test_state_put_in_place_directly_is_checked_and_copied():
    """As ZeroRedundancyOptimizer.load_state_dict does: states written into
    opt.state; the next step checks them like load_state_dict (before
    anything changes), copies them, and resumes bit-exactly."""
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = _trained(model, model.named_parameters())
    saved = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})

    def put_in_place(names):
        resumed = mlp(SIZES, seed=5)
        resumed.load_state_dict(saved["model"])
        params = list(resumed.parameters())
        resumed_opt = mlorc.torch.AdamW(list(zip(names, params)), lr=1e-2, rank=4)
        for index, entry in saved["opt"]["state"].items():
            resumed_opt.state[params[index]] = dict(entry)
        resumed.zero_grad()
        torch.nn.functional.mse_loss(resumed(x), y).backward()
        return resumed, resumed_opt, params

    names = [name for name, _ in model.named_parameters()]
    resumed, resumed_opt, params = put_in_place(names)
    resumed_opt.state[params[0]], resumed_opt.state[params[2]] = resumed_opt.state[params[2]], resumed_opt.state[params[0]]
    with pytest.raises(ValueError, match="the state of parameter '0.weight' .* is for a 48x64 tensor"):
        resumed_opt.step()
    assert_bitwise_equal(resumed.parameters(), model.parameters())
    # The same shape, another name: only the tensor id tells.
    renamed, renamed_opt, _ = put_in_place(["first.weight"] + names[1:])
    with pytest.raises(ValueError, match="the state of parameter 'first.weight' .* has tensor id .* it belongs to "
                                         "none of this optimizer's parameters"):
        renamed_opt.step()
    assert_bitwise_equal(renamed.parameters(), model.parameters())

    resumed, resumed_opt, params = put_in_place(names)
    resumed_opt.step()  # step 4, from put_in_place's gradients
    train(model, opt, x, y, 1)
    train(resumed, resumed_opt, x, y, 2)
    train(model, opt, x, y, 2)
    assert_bitwise_equal(resumed.parameters(), model.parameters())
    for p, index in zip(params, range(6)):
        assert resumed_opt.state[p]["mlorc_state"].data_ptr() != saved["opt"]["state"][index]["mlorc_state"].data_ptr()
