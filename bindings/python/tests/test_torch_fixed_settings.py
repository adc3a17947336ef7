"""Settings baked into the states (rank, oversampling, stats_stride, d0)
cannot change after the optimizer is built: the next step, state_dict() and
state_bytes() refuse the change, naming it, and change nothing."""
import pytest
import torch

import mlorc
from helpers import backward, mlp, params_of, regression_data, save_and_load, states, train

SIZES = [32, 64, 48, 10]


def trained(cls=mlorc.torch.AdamW, steps=2, **kwargs):
    model = mlp(SIZES)
    opt = cls(model.parameters(), **kwargs)
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    train(model, opt, x, y, steps)
    opt.zero_grad()
    backward(model, x, y)
    return model, opt


@pytest.mark.parametrize("key, value", [("rank", 8), ("oversampling", 2)])
def test_changed_setting_is_refused_at_next_step_and_state_dict(key, value):
    model, opt = trained(lr=1e-2, rank=4)
    params, saved = params_of(model), [s.clone() for s in states(opt, model)]
    old = opt.param_groups[0][key]
    opt.param_groups[0][key] = value
    message = f"parameter group 0: {key} was changed from {old} to {value}"
    with pytest.raises(ValueError, match=message):
        opt.step()
    with pytest.raises(ValueError, match=message):
        opt.step_param(model[0].weight)
    with pytest.raises(ValueError, match=message):
        opt.state_dict()
    with pytest.raises(ValueError, match=message):
        opt.state_bytes()
    for p, before in zip(model.parameters(), params):
        assert torch.equal(p.detach(), before)
    for s, before in zip(states(opt, model), saved):
        assert torch.equal(s, before)
    # Set back, everything works again, and the checkpoint tells the truth.
    opt.param_groups[0][key] = old
    opt.step()
    checkpoint = save_and_load(opt.state_dict())
    assert checkpoint["param_groups"][0][key] == old
    assert mlorc.inspect_state(states(opt, model)[0])["rank"] == 4
    fresh = mlorc.torch.AdamW(mlp(SIZES).parameters(), lr=1e-2, rank=4)
    fresh.load_state_dict(checkpoint)


def test_change_before_the_first_step_is_refused_too():
    model = mlp(SIZES)
    opt = mlorc.torch.Lion(model.parameters(), rank=4)
    opt.param_groups[0]["rank"] = 2
    backward(model, *regression_data(4, SIZES[0], SIZES[-1]))
    with pytest.raises(ValueError, match="rank was changed from 4 to 2"):
        opt.step()
    assert not opt.state  # no state was created


def test_prodigy_d0_and_stats_stride_are_fixed():
    for key, value in (("d0", 1e-3), ("stats_stride", 1)):
        model, opt = trained(mlorc.torch.Prodigy, rank=4)
        opt.param_groups[0][key] = value
        with pytest.raises(ValueError, match=f"{key} was changed"):
            opt.step()


def test_other_settings_still_change_at_the_next_step():
    model, opt = trained(lr=1e-2, rank=4)
    opt.param_groups[0].update(lr=1e-3, betas=(0.8, 0.9), weight_decay=0.1, seed=3, power_iterations=1)
    opt.step()  # accepted
    assert mlorc.inspect_state(states(opt, model)[0])["step"] == 3


def test_loaded_checkpoint_settings_become_the_fixed_ones():
    """A Prodigy checkpoint made with another d0 carries its own group state:
    after loading, its d0 is the group's, and stepping goes on."""
    model, source = trained(mlorc.torch.Prodigy, rank=4, d0=1e-4)
    target_model = mlp(SIZES)
    target = mlorc.torch.Prodigy(target_model.parameters(), rank=4, d0=1e-6)
    target.load_state_dict(save_and_load(source.state_dict()))
    assert target.param_groups[0]["d0"] == 1e-4
    backward(target_model, *regression_data(16, SIZES[0], SIZES[-1]))
    target.step()
    assert mlorc.inspect_group_state(target.param_groups[0]["mlorc_group_state"])["d0"] == pytest.approx(1e-4)


def test_load_into_an_optimizer_with_a_changed_setting_is_refused():
    _, source = trained(lr=1e-2, rank=4)
    _, opt = trained(lr=1e-2, rank=4)
    opt.param_groups[0]["rank"] = 8
    with pytest.raises(ValueError, match="rank was changed from 4 to 8"):
        opt.load_state_dict(save_and_load(source.state_dict()))
