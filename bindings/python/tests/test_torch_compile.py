"""torch.compile: a compiled function calling opt.step() gives the eager
results bit for bit, and tensor ids never depend on how states are created."""
import subprocess
import sys

import torch

import mlorc
from helpers import assert_bitwise_equal, backward, mlp, regression_data, save_and_load, states, twin

SIZES = [32, 64, 48, 10]  # two low-rank matrices at rank 4: their sketches are keyed by the tensor id
STEPS = 5


def tensor_ids(opt, model):
    return [mlorc.inspect_state(s)["tensor_id"] for s in states(opt, model)]


def make_step(model, opt, x, y):
    def step():
        opt.zero_grad()
        backward(model, x, y)
        opt.step()
    return step


def test_compiled_step_equals_eager_bit_for_bit():
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    eager_model = mlp(SIZES)
    compiled_model = twin(eager_model)
    eager_opt = mlorc.torch.AdamW(eager_model.parameters(), lr=1e-2, rank=4)
    compiled_opt = mlorc.torch.AdamW(compiled_model.parameters(), lr=1e-2, rank=4)
    eager_step = make_step(eager_model, eager_opt, x, y)
    compiled_step = torch.compile(make_step(compiled_model, compiled_opt, x, y), backend="eager")
    for _ in range(STEPS):
        eager_step()
        compiled_step()
    assert tensor_ids(compiled_opt, compiled_model) == list(range(6))
    assert_bitwise_equal(compiled_model.parameters(), eager_model.parameters())
    assert_bitwise_equal(states(compiled_opt, compiled_model), states(eager_opt, eager_model))
    kinds = [mlorc.inspect_state(s)["storage"] for s in states(compiled_opt, compiled_model)]
    assert kinds.count("lowrank") == 2  # the ids matter: they key the low-rank sketches

    # Its checkpoint resumes in a fresh (eager) optimizer, bit-exactly.
    checkpoint = save_and_load({"model": compiled_model.state_dict(), "opt": compiled_opt.state_dict()})
    resumed_model = mlp(SIZES, seed=7)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_opt = mlorc.torch.AdamW(resumed_model.parameters(), lr=1e-2, rank=4)
    resumed_opt.load_state_dict(checkpoint["opt"])
    make_step(resumed_model, resumed_opt, x, y)()
    eager_step()
    assert_bitwise_equal(resumed_model.parameters(), eager_model.parameters())


def test_ids_do_not_depend_on_the_order_states_are_created():
    """States created by step hooks in backward order (last layer first) get
    the same ids as those created by step(), in parameter order."""
    x, y = regression_data(16, SIZES[0], SIZES[-1])
    model = mlp(SIZES)
    hooked = twin(model)
    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-2)
    hooked_opt = mlorc.torch.AdamW(hooked.parameters(), lr=1e-2)
    created = []
    for p in hooked.parameters():
        p.register_post_accumulate_grad_hook(lambda p: created.append(hooked_opt._positions[p]))
    hooked_opt.register_step_hooks()
    make_step(model, opt, x, y)()
    backward(hooked, x, y)
    assert created == sorted(created, reverse=True)  # backward reached the head first
    assert tensor_ids(hooked_opt, hooked) == tensor_ids(opt, model) == list(range(6))


def test_import_does_not_load_dynamo():
    """The graph break is resolved at the first step, not at import."""
    code = "import sys, mlorc.torch; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
