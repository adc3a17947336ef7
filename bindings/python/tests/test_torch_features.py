"""torch.optim.Optimizer behaviour: schedulers, groups, hooks, compress=,
skipped parameters, memory reporting."""
import pytest
import torch

import mlorc
from helpers import (assert_bitwise_equal, backward, mlp, params_of, regression_data, states,
                     train, twin)

SIZES = [32, 64, 48, 10]


def storage_of(opt, p):
    return mlorc.inspect_state(opt.state[p]["mlorc_state"].numpy())


def test_lr_scheduler_drives_the_step():
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    reference_model = mlp(SIZES)
    model = twin(reference_model)
    schedule = lambda step: 1.0 if step < 5 else (0.1 if step < 10 else 0.0)  # noqa: E731
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, compress=False)
    reference = torch.optim.AdamW(reference_model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    reference_sched = torch.optim.lr_scheduler.LambdaLR(reference, schedule)
    train(model, opt, x, y, 10, sched)
    train(reference_model, reference, x, y, 10, reference_sched)
    for a, b in zip(reference_model.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # The schedule now gives lr = 0: steps change no weight (decay is 1 - 0·λ).
    assert opt.param_groups[0]["lr"] == 0.0
    frozen = params_of(model)
    train(model, opt, x, y, 3, sched)
    assert_bitwise_equal(model.parameters(), frozen)


def test_lr_scheduler_with_low_rank_storage_and_tensor_lr():
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), lr=torch.tensor(1e-2), rank=4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    train(model, opt, x, y, 1, sched)
    frozen = params_of(model)
    train(model, opt, x, y, 2, sched)
    assert_bitwise_equal(model.parameters(), frozen)
    assert storage_of(opt, model[0].weight)["step"] == 3


def test_param_groups_are_independent():
    """Two separate networks in two groups of one optimizer: changing the
    second group's lr, betas, weight decay and rank leaves the first group's
    trajectory bit for bit as it was."""
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    runs = []
    for second in ({"lr": 1e-2}, {"lr": 0.0, "betas": (0.5, 0.9), "weight_decay": 0.3, "rank": 2}):
        first_net, second_net = mlp(SIZES, seed=0), mlp(SIZES, seed=1)
        second_before = params_of(second_net)
        opt = mlorc.torch.AdamW([{"params": first_net.parameters()},
                                 {"params": second_net.parameters(), **second}], lr=3e-3, rank=4)
        for _ in range(5):
            opt.zero_grad()
            backward(first_net, x, y)
            backward(second_net, x, y)
            opt.step()
        runs.append((first_net, second_net, second_before, opt))
    assert_bitwise_equal(runs[0][0].parameters(), runs[1][0].parameters())
    assert not torch.equal(runs[0][1][0].weight, runs[0][2][0])  # lr 1e-2: it moved
    assert_bitwise_equal(runs[1][1].parameters(), runs[1][2])     # lr 0: it did not
    opt, second_net = runs[1][3], runs[1][1]
    assert storage_of(opt, second_net[0].weight)["rank"] == 2
    assert storage_of(opt, runs[1][0][0].weight)["rank"] == 4


def test_non_contiguous_gradient_is_read_through_a_copy():
    model = mlp([8, 6])
    twin_model = twin(model)
    x, y = regression_data(8, 8, 6)
    opts = [mlorc.torch.AdamW(m.parameters(), lr=1e-2) for m in (model, twin_model)]
    for m in (model, twin_model):
        backward(m, x, y)
    twin_model[0].weight.grad = twin_model[0].weight.grad.t().contiguous().t()
    assert not twin_model[0].weight.grad.is_contiguous()
    for o in opts:
        o.step()
    assert_bitwise_equal(twin_model.parameters(), model.parameters())


def test_add_param_group_later_gets_next_tensor_ids_and_own_settings():
    model = mlp(SIZES)
    first, later = list(model[0].parameters()), list(model[2].parameters())
    opt = mlorc.torch.AdamW(first, lr=1e-3)
    opt.add_param_group({"params": later, "rank": 2, "compress": True})
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    backward(model, x, y)
    opt.step()
    info = storage_of(opt, model[2].weight)
    assert (info["tensor_id"], info["rank"], info["storage"]) == (2, 2, "lowrank")
    assert storage_of(opt, model[0].bias)["tensor_id"] == 1
    assert model[4].weight not in opt.state  # not optimized


def test_hook_based_per_parameter_step_equals_ordinary_step():
    x, y = regression_data(32, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    hooked = twin(model)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-3, rank=4)
    hooked_opt = mlorc.torch.AdamW(hooked.parameters(), lr=1e-3, rank=4)
    handles = hooked_opt.register_step_hooks()
    for _ in range(8):
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
        backward(hooked, x, y)  # the hooks step each parameter and free its grad
        assert all(p.grad is None for p in hooked.parameters())
    assert_bitwise_equal(hooked.parameters(), model.parameters())
    assert_bitwise_equal(states(hooked_opt, hooked), states(opt, model))
    for h in handles:
        h.remove()


def test_step_param_from_own_hook_and_closure():
    model = mlp([8, 4])
    opt = mlorc.torch.Lion(model.parameters(), lr=1e-2)
    x, y = regression_data(8, 8, 4)
    stepped = []

    def hook(p):
        opt.step_param(p)
        stepped.append(p)

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    loss = opt.step(lambda: backward(model, x, y))  # closure's backward runs the hooks too
    assert loss is not None and len(stepped) == 2
    with pytest.raises(ValueError, match="not a parameter"):
        opt.step_param(torch.nn.Parameter(torch.zeros(3)))


def test_parameters_without_grad_are_skipped():
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2)
    model[4].weight.requires_grad_(False)
    frozen = model[4].weight.detach().clone()
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    backward(model, x, y)
    opt.step()
    assert torch.equal(model[4].weight, frozen)
    assert model[4].weight not in opt.state and model[0].weight in opt.state


def test_compress_policies():
    named = lambda m: list(m.named_parameters())  # noqa: E731
    model = mlp(SIZES)
    x, y = regression_data(8, SIZES[0], SIZES[-1])

    def storages(opt, m):
        backward(m, x, y)
        opt.step()
        return {n: storage_of(opt, p)["storage"] for n, p in m.named_parameters() if p.dim() == 2}

    opt = mlorc.torch.AdamW(named(model), compress={"2.weight"})
    assert storages(opt, model) == {"0.weight": "dense", "2.weight": "lowrank", "4.weight": "dense"}
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(named(model), compress=lambda name, p: name.startswith("4") and p.dim() == 2)
    assert storages(opt, model) == {"0.weight": "dense", "2.weight": "dense", "4.weight": "lowrank"}
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW(model.parameters(), compress=lambda index, p: index == 0)
    assert storages(opt, model)["0.weight"] == "lowrank"
    model = mlp(SIZES)
    opt = mlorc.torch.AdamW([{"params": model[0].parameters()},
                             {"params": model[2].parameters(), "compress": False}])
    backward(model, x, y)
    opt.step()
    assert storage_of(opt, model[0].weight)["storage"] == "lowrank"
    assert storage_of(opt, model[2].weight)["storage"] == "dense"
    assert "compress" not in opt.param_groups[1]  # callables and sets never reach state_dict()


def test_compress_policy_errors():
    model = mlp(SIZES)
    with pytest.raises(TypeError, match="named_parameters"):
        mlorc.torch.AdamW(model.parameters(), compress={"0.weight"})
    with pytest.raises(ValueError, match="not optimized"):
        mlorc.torch.AdamW(model.named_parameters(), compress={"0.weight", "typo.weight"})
    with pytest.raises(ValueError, match="2 or more dimensions"):
        mlorc.torch.AdamW(model.named_parameters(), compress=lambda name, p: True)
    with pytest.raises(ValueError, match="cannot be stored as asked"):
        mlorc.torch.AdamW([model[4].weight], rank=16, compress="lowrank")  # 10x48 at rank 16
    with pytest.raises(ValueError, match="rank"):
        mlorc.torch.AdamW(model.parameters(), rank=0)
    with pytest.raises(ValueError, match="learning rate"):
        mlorc.torch.AdamW(model.parameters(), lr=-1.0)


def test_higher_dimensional_parameters_are_flattened():
    conv = torch.nn.Conv2d(3, 32, 3)
    opt = mlorc.torch.AdamW(conv.parameters(), lr=1e-3, rank=2)
    conv(torch.randn(2, 3, 8, 8)).square().mean().backward()
    opt.step()
    info = storage_of(opt, conv.weight)
    assert (info["rows"], info["cols"], info["storage"]) == (32, 27, "lowrank")


def test_memory_reporting():
    model = mlp([256, 512, 512, 10])
    report = mlorc.memory_report(model, rank=4)
    opt = mlorc.torch.AdamW(model.parameters(), rank=4)
    numel = sum(p.numel() for p in model.parameters())
    assert opt.dense_adamw_state_bytes() == report.dense_adamw_bytes == 8 * numel
    assert opt.state_bytes() == report.state_bytes  # before any step: what the states will take
    x, y = regression_data(4, 256, 10)
    train(model, opt, x, y, 1)
    assert opt.state_bytes() == report.state_bytes == sum(s.numel() for s in states(opt, model))
    assert report.saving > 0.9
    assert [r["storage"] for r in report.rows] == ["lowrank", "dense", "lowrank", "dense", "dense", "dense"]
    assert "total" in str(report)


def test_group_hyperparameters_reach_the_native_handle_every_step():
    from mlorc import _native

    model = mlp(SIZES)
    opt = mlorc.torch.AdamW([
        {"params": model[0].parameters(), "oversampling": 2, "power_iterations": 1, "eps": 1e-6},
        {"params": model[2].parameters(), "betas": (0.8, 0.9), "bias_correction": False, "seed": 5},
    ], lr=1e-3, threads=2)
    x, y = regression_data(8, SIZES[0], SIZES[-1])
    backward(model, x, y)
    opt.step()
    first, second = opt._handles
    assert [_native.get_hyper(first, k) for k in ("oversampling", "power_iterations", "eps", "threads")] == \
        [2, 1, pytest.approx(1e-6), 2]
    assert [_native.get_hyper(second, k) for k in ("beta1", "beta2", "bias_correction", "seed")] == \
        [pytest.approx(0.8), pytest.approx(0.9), 0, 5]
    opt.param_groups[1]["betas"] = (0.7, 0.95)  # read again at the next step
    backward(model, x, y)
    opt.step()
    assert _native.get_hyper(second, "beta1") == pytest.approx(0.7)
