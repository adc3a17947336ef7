"""Refused parameters and states raise, never crash, and change nothing."""
import pytest
import torch

import mlorc
from helpers import backward, mlp, params_of, regression_data, states, train

SIZES = [32, 64, 48, 10]


def trained():
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, rank=4)
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    train(model, opt, x, y, 2)
    opt.zero_grad()
    backward(model, x, y)
    return model, opt


def assert_unchanged(model, opt, params, saved_states):
    for p, before in zip(model.parameters(), params):
        assert torch.equal(p.detach(), before)
    for s, before in zip(states(opt, model), saved_states):
        assert torch.equal(s, before)


def snapshot(model, opt):
    return params_of(model), [s.clone() for s in states(opt, model)]


def test_construction_refuses_unsuitable_parameters():
    with pytest.raises(ValueError, match="not contiguous"):
        mlorc.torch.AdamW([torch.nn.Parameter(torch.randn(8, 4).t())])
    with pytest.raises(TypeError, match="model.float()"):
        mlorc.torch.AdamW([torch.nn.Parameter(torch.randn(8, 4, dtype=torch.float64))])
    with pytest.raises(TypeError, match="float32, bfloat16 and float16"):
        mlorc.torch.Lion([torch.nn.Parameter(torch.randn(8, 4, dtype=torch.float64))])


@pytest.mark.parametrize("case", ["non-contiguous", "float64", "non-finite grad",
                                  "corrupted header", "corrupted factors", "foreign state"])
def test_refused_step_changes_nothing(case):
    model, opt = trained()
    params, saved = snapshot(model, opt)
    target = model[2].weight
    if case == "non-contiguous":
        # Swap in a non-contiguous tensor with the same values: refused, not copied.
        target.data = target.data.t().contiguous().t()
        expected = ValueError
    elif case == "float64":
        model[4].double()
        for p in model[4].parameters():
            p.grad = p.grad.double()
        expected = TypeError
    elif case == "non-finite grad":
        target.grad[3, 3] = float("nan")
        expected = mlorc.MlorcError
    elif case == "corrupted header":
        opt.state[target]["mlorc_state"][16] ^= 1
        saved = [s.clone() for s in states(opt, model)]
        expected = mlorc.MlorcError
    elif case == "corrupted factors":
        opt.state[target]["mlorc_state"][500] ^= 1
        saved = [s.clone() for s in states(opt, model)]
        expected = mlorc.MlorcError
    else:
        # Another parameter's state put in place without load_state_dict: checked as a loaded one is.
        opt.state[target]["mlorc_state"] = opt.state[model[0].weight]["mlorc_state"].clone()
        saved = [s.clone() for s in states(opt, model)]
        expected = ValueError
    with pytest.raises(expected) as info:
        opt.step()
    if case == "foreign state":
        assert "state of parameter 2 (put in place without this optimizer's load_state_dict" in str(info.value)
        assert "is for a 64x32 tensor, but the parameter is 48x64" in str(info.value)
    if expected is mlorc.MlorcError:
        assert info.value.status in (mlorc._mlorc.ERROR_NON_FINITE, mlorc._mlorc.ERROR_STATE_CORRUPTED,
                                     mlorc._mlorc.ERROR_STATE_MISMATCH)
    restored = [p.detach().double() if p.dtype == torch.float64 else p.detach() for p in model.parameters()]
    for p, before in zip(restored, params):
        assert torch.equal(p.to(before.dtype), before)
    for s, before in zip(states(opt, model), saved):
        assert torch.equal(s, before)


def test_error_names_the_parameter():
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.named_parameters())
    x, y = regression_data(4, SIZES[0], SIZES[-1])
    backward(model, x, y)
    model[2].weight.data = model[2].weight.data.t().contiguous().t()
    with pytest.raises(ValueError, match="'2.weight' is not contiguous"):
        opt.step()


class _Tagged(torch.Tensor):
    """A tensor subclass (as libraries define them)."""


def test_tensor_subclass_parameters_are_refused_at_construction():
    tagged = torch.nn.Parameter(torch.randn(4, 4).as_subclass(_Tagged))
    assert type(tagged) is _Tagged
    with pytest.raises(TypeError, match="parameter 'w' is a _Tagged, a tensor subclass"):
        mlorc.torch.AdamW([("w", tagged), ("b", torch.nn.Parameter(torch.zeros(4)))])
    with pytest.raises(TypeError, match="parameter 1 is a _Tagged"):
        mlorc.torch.Lion([torch.nn.Parameter(torch.zeros(4)), tagged])
    lazy = torch.nn.LazyLinear(3)
    with pytest.raises(TypeError, match="lazy module; run one forward pass"):
        mlorc.torch.AdamW(lazy.named_parameters())


def test_dtensor_layouts_on_one_process(tmp_path):
    """A DTensor on a one-process gloo group (file store: no network): dim-1
    shards are refused when the optimizer is built; dim-0 shards (FSDP2's
    layout) are stepped, here as the whole matrix."""
    import datetime

    import torch.distributed as dist
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    try:
        mesh = DeviceMesh("cpu", [0])
        columns = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), mesh, [Shard(1)]))
        with pytest.raises(TypeError, match="parameter 'layer.weight' is a DTensor sharded on dim 1"):
            mlorc.torch.AdamW([("layer.weight", columns)])
        start = torch.randn(16, 12)
        rows = torch.nn.Parameter(distribute_tensor(start.clone(), mesh, [Shard(0)]))
        plain = torch.nn.Parameter(start.clone())
        opt = mlorc.torch.AdamW([("layer.weight", rows)], lr=1e-2, rank=2, compress=True)
        plain_opt = mlorc.torch.AdamW([("layer.weight", plain)], lr=1e-2, rank=2, compress=True)
        for step in range(3):
            g = torch.randn(16, 12, generator=torch.Generator().manual_seed(step))
            rows.grad = distribute_tensor(g, mesh, [Shard(0)])
            plain.grad = g
            opt.step()
            plain_opt.step()
        assert not torch.equal(rows.to_local(), start)
        # The sharded step's QR (CholeskyQR2 in fp64) differs from the plain one by rounding.
        assert torch.allclose(rows.to_local(), plain.detach(), rtol=0, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_tensor_subclass_gradient_is_refused_and_changes_nothing():
    model, opt = trained()
    params, saved = snapshot(model, opt)
    model[2].weight.grad = model[2].weight.grad.as_subclass(_Tagged)
    with pytest.raises(TypeError, match="the gradient of parameter 2 is a _Tagged"):
        opt.step()
    assert_unchanged(model, opt, params, saved)
