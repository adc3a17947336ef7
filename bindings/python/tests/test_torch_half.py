"""bfloat16 and float16 parameters through mlorc.torch: stepped in place,
fp32 inside, with optional fp32 master weights; state_dict and resume;
refusals that change nothing; autocast and GradScaler."""
import pytest
import torch

import mlorc
from helpers import assert_bitwise_equal, backward, mlp, params_of, regression_data, save_and_load, train

HALF = [torch.bfloat16, torch.float16]


def states(opt, model):
    return [opt.state[p]["mlorc_state"] for p in model.parameters()]


def half_model(dtype, seed=0):
    return mlp([16, 32, 32, 4], seed=seed).to(dtype)


def data(dtype):
    x, y = regression_data(64, 16, 4)
    return x.to(dtype), y.to(dtype)


def master_of(state):
    """The fp32 master weights at the end of a state (mlorc.h: the payload
    ends with them), as a float32 tensor."""
    info = mlorc.inspect_state(state)
    n = info["rows"] * info["cols"]
    return state[info["state_bytes"] - 4 * n:info["state_bytes"]].view(torch.float32)


def final_loss(make, lr, dtype, steps=30):
    model = half_model(dtype)
    x, y = data(dtype)
    opt = make(model.parameters(), lr=lr, rank=2)
    before = [p.data_ptr() for p in model.parameters()]
    with torch.no_grad():
        start = torch.nn.functional.mse_loss(model(x).float(), y.float()).item()
    train(model, opt, x, y, steps)
    with torch.no_grad():
        end = torch.nn.functional.mse_loss(model(x).float(), y.float()).item()
    assert [p.data_ptr() for p in model.parameters()] == before  # updated where they live
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())
    return start, end, [mlorc.inspect_state(s) for s in states(opt, model)]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("make, lr", [(mlorc.torch.AdamW, 1e-2), (mlorc.torch.Lion, 3e-3), (mlorc.torch.Adopt, 1e-2)])
def test_half_parameters_train_like_fp32(make, lr, dtype):
    start, end, info = final_loss(make, lr, dtype)
    _, end32, _ = final_loss(make, lr, torch.float32)
    assert {i["dtype"] for i in info} == {"bf16" if dtype == torch.bfloat16 else "f16"}
    assert "lowrank" in {i["storage"] for i in info}
    # Seen: 1.14 -> 0.57-0.80, each within 18% of the fp32 run's final loss
    # (ADOPT, whose division by sqrt(v) is the most sensitive, differs most).
    assert end < 0.8 * start, (start, end)
    assert abs(end - end32) <= 0.25 * end32, (end, end32)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("compress", [False, True])
def test_master_weights_follow_the_fp32_step_bit_for_bit(dtype, compress):
    """With master weights, the master is stepped as an fp32 parameter given
    the same gradients, and the half parameter is its rounding (to nearest
    even without stochastic rounding)."""
    model = half_model(dtype)
    x, y = data(dtype)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, rank=2, compress=compress, master_weights=True,
                            stochastic_rounding=False)
    reference = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    ref_opt = mlorc.torch.AdamW(reference, lr=1e-2, rank=2, compress=compress)
    for _ in range(50):
        opt.zero_grad()
        backward(model, x, y)
        for r, p in zip(reference, model.parameters()):
            r.grad = p.grad.float()  # exact: every half value is a float
        opt.step()
        ref_opt.step()
    for p, r, s in zip(model.parameters(), reference, states(opt, model)):
        assert mlorc.inspect_state(s)["master_weights"]
        assert torch.equal(master_of(s).view(p.shape), r.detach())
        assert torch.equal(p.detach(), r.detach().to(dtype))  # torch's cast rounds to nearest even


def test_master_weights_add_four_bytes_per_element():
    model = half_model(torch.bfloat16)
    plain = mlorc.torch.AdamW(model.parameters(), rank=2)
    master = mlorc.torch.AdamW(model.parameters(), rank=2, master_weights=True)
    extra = sum(4 * p.numel() for p in model.parameters())
    assert master.state_bytes() == plain.state_bytes() + extra
    # torch.optim.AdamW on bf16 parameters keeps bf16 moments: 4 bytes per element.
    assert plain.dense_adamw_state_bytes() == sum(4 * p.numel() for p in model.parameters())


@pytest.mark.parametrize("master", [False, True])
def test_bf16_resume_is_bit_exact_through_torch_save(master):
    x, y = data(torch.bfloat16)
    model = half_model(torch.bfloat16)
    opt = mlorc.torch.AdamW(model.named_parameters(), lr=1e-2, rank=2, master_weights=master)
    train(model, opt, x, y, 5)
    saved = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    train(model, opt, x, y, 5)

    resumed = half_model(torch.bfloat16, seed=1)
    resumed.load_state_dict(saved["model"])
    resumed_opt = mlorc.torch.AdamW(resumed.named_parameters(), lr=1e-2, rank=2, master_weights=master)
    resumed_opt.load_state_dict(saved["opt"])
    train(resumed, resumed_opt, x, y, 5)
    assert_bitwise_equal(resumed.parameters(), model.parameters())
    assert_bitwise_equal(states(resumed_opt, resumed), states(opt, model))


def test_a_checkpoint_of_another_dtype_or_master_setting_is_refused():
    x, y = data(torch.bfloat16)
    model = half_model(torch.bfloat16)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, rank=2)
    train(model, opt, x, y, 2)
    saved = opt.state_dict()
    as_fp32 = half_model(torch.bfloat16).float()
    with pytest.raises(ValueError, match="bf16 parameter, but the parameter is torch.float32"):
        mlorc.torch.AdamW(as_fp32.parameters(), lr=1e-2, rank=2).load_state_dict(saved)
    with_master = mlorc.torch.AdamW(half_model(torch.bfloat16).parameters(), lr=1e-2, rank=2, master_weights=True)
    with pytest.raises(ValueError, match="has no fp32 master weights"):
        with_master.load_state_dict(saved)


def test_threads_do_not_change_half_results():
    results = []
    for threads in (1, 2):
        model = half_model(torch.bfloat16)
        x, y = data(torch.bfloat16)
        opt = mlorc.torch.Lion(model.parameters(), lr=1e-3, rank=2, threads=threads)
        train(model, opt, x, y, 5)
        results.append(params_of(model))
    assert_bitwise_equal(*results)


def test_stochastic_rounding_is_the_default_and_can_be_turned_off():
    def run(**rounding):
        model = half_model(torch.bfloat16)
        x, y = data(torch.bfloat16)
        opt = mlorc.torch.AdamW(model.parameters(), lr=1e-4, rank=2, **rounding)
        train(model, opt, x, y, 3)
        return params_of(model)

    default = run()
    assert_bitwise_equal(default, run(stochastic_rounding=True))  # the default, and repeatable
    nearest = run(stochastic_rounding=False)
    assert any(not torch.equal(a, b) for a, b in zip(default, nearest))


def test_fp16_overflow_and_non_finite_half_gradients_change_nothing():
    model = half_model(torch.float16)
    x, y = data(torch.float16)
    opt = mlorc.torch.Lion(model.parameters(), lr=1e-3, rank=2, weight_decay=0)
    train(model, opt, x, y, 2)
    target = model[0].weight
    with torch.no_grad():
        target[0, 0] = 65504.0  # float16's largest value; Lion adds lr * sign(...)
    before, saved = params_of(model), [s.clone() for s in states(opt, model)]
    opt.zero_grad()
    backward(model, x, y)
    for g in opt.param_groups:
        g["lr"] = 1000.0  # 65504 + 1000 rounds to infinity in float16
    with pytest.raises(mlorc.MlorcError, match="f16"):
        opt.step()
    assert_bitwise_equal(params_of(model), before)
    assert_bitwise_equal(states(opt, model), saved)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    target.grad[0, 1] = float("inf")
    with pytest.raises(mlorc.MlorcError, match="NaN or infinity"):
        opt.step()
    assert_bitwise_equal(params_of(model), before)
    assert_bitwise_equal(states(opt, model), saved)


def test_bf16_autocast_with_fp32_parameters():
    """Autocast computes in bf16 but leaves parameters and gradients fp32."""
    model = mlp([16, 32, 32, 4])
    x, y = regression_data(64, 16, 4)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2, rank=2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.8 * losses[0], losses


def test_grad_scaler_with_fp16_autocast_steps_the_unscaled_gradient():
    """GradScaler multiplies the loss by a power of two and divides the
    gradients back before mlorc's step (exactly, barring underflow), and skips
    the step when a gradient overflowed."""
    x, y = regression_data(64, 16, 4)
    scaled, plain = mlp([16, 32, 32, 4]), mlp([16, 32, 32, 4])
    opt = mlorc.torch.AdamW(scaled.parameters(), lr=1e-2, rank=2)
    plain_opt = mlorc.torch.AdamW(plain.parameters(), lr=1e-2, rank=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for _ in range(5):
        for model, o in ((scaled, opt), (plain, plain_opt)):
            o.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
            if o is opt:
                scaler.scale(loss).backward()
                scaler.step(o)
                scaler.update()
            else:
                # The same fp16 forward; its gradients scaled as the scaler does, then unscaled.
                (loss * 2.0 ** 10).backward()
                for p in model.parameters():
                    p.grad.mul_(2.0 ** -10)
                o.step()
    assert_bitwise_equal(scaled.parameters(), plain.parameters())

    before = params_of(scaled)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(scaled(x).float(), y)
    scaler.scale(loss * float("inf")).backward()
    scaler.step(opt)  # an inf gradient: the scaler skips mlorc's step
    scaler.update()
    assert_bitwise_equal(params_of(scaled), before)


@pytest.mark.parametrize("make", [mlorc.torch.AdamW, mlorc.torch.Lion])
def test_bf16_state_halves_the_moments_and_trains_like_fp32(make):
    """state_dtype='bf16' (MLORC_PARAM_STATE_DTYPE): moments and factors in
    bf16, about half the state; the same recipe trains alike, and resumes
    bit-exactly through torch.save."""
    lr = 3e-3 if make is mlorc.torch.Lion else 1e-2
    x, y = regression_data(64, 16, 4)
    runs = {}
    for state_dtype in ("f32", "bf16"):
        model = mlp([16, 32, 32, 4])
        opt = make(model.named_parameters(), lr=lr, rank=2, state_dtype=state_dtype)
        train(model, opt, x, y, 30)
        with torch.no_grad():
            runs[state_dtype] = (torch.nn.functional.mse_loss(model(x), y).item(), opt.state_bytes(), model, opt)
    (loss32, bytes32, _, _), (loss16, bytes16, model, opt) = runs["f32"], runs["bf16"]
    header = 128 * len(list(model.parameters()))
    assert bytes16 - header <= (bytes32 - header) // 2 + 4 * len(list(model.parameters()))  # padded to 4 bytes
    assert {mlorc.inspect_state(s)["state_dtype"] for s in states(opt, model)} == {"bf16"}
    # Seen: final losses within 2% of the fp32 state's.
    assert abs(loss16 - loss32) <= 0.1 * loss32, (loss16, loss32)
    saved = save_and_load({"model": model.state_dict(), "opt": opt.state_dict()})
    train(model, opt, x, y, 3)
    resumed = mlp([16, 32, 32, 4], seed=1)
    resumed.load_state_dict(saved["model"])
    resumed_opt = make(resumed.named_parameters(), lr=lr, rank=2, state_dtype="bf16")
    resumed_opt.load_state_dict(saved["opt"])
    train(resumed, resumed_opt, x, y, 3)
    assert_bitwise_equal(resumed.parameters(), model.parameters())
