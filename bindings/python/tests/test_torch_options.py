"""The update options through mlorc.torch: each keyword reaches the library
and changes the step as its equation says."""
import torch

import mlorc


def one_step(opt_class, w0, g, **kwargs):
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = opt_class([p], compress=False, weight_decay=0.0, **kwargs)
    p.grad = torch.tensor(g)
    opt.step()
    return p.detach()


def test_atan2_first_step_is_plus_minus_lr():
    # m̂ = g, √v̂ = |g| on the first step: (4/π)·atan2(g, |g|) = ±1, ε unused.
    w = one_step(mlorc.torch.AdamW, [0.0, 0.0], [3.0, -0.002], lr=0.25, eps=1.0, atan2=True)
    torch.testing.assert_close(w, torch.tensor([-0.25, 0.25]), rtol=0, atol=1e-7)


def test_clip_norm_scales_the_gradient():
    # g = (3, 4) clipped to norm 1 → (0.6, 0.8); first step with ε = 1: g'/(|g'| + 1).
    w = one_step(mlorc.torch.AdamW, [0.0, 0.0], [3.0, 4.0], lr=1.0, eps=1.0, clip_norm=1.0)
    torch.testing.assert_close(w, torch.tensor([-0.6 / 1.6, -0.8 / 1.8]), rtol=0, atol=1e-6)


def test_orthograd_removes_the_component_along_the_weights():
    w = one_step(mlorc.torch.AdamW, [1.0, 0.0], [1.0, 1.0], lr=0.1, orthograd=True)
    torch.testing.assert_close(w, torch.tensor([1.0, -0.1]), rtol=0, atol=1e-6)


def test_grams_and_cautious_on_lion():
    p = torch.nn.Parameter(torch.zeros(2))
    plain = torch.nn.Parameter(torch.zeros(2))
    opts = [mlorc.torch.Lion([p], lr=0.5, weight_decay=0.0, compress=False, grams=True, cautious=True),
            mlorc.torch.Lion([plain], lr=0.5, weight_decay=0.0, compress=False)]
    for g in ([1.0, 1.0], [-0.1, 1.0]):
        for param, opt in zip((p, plain), opts):
            param.grad = torch.tensor(g)
            opt.step()
    # Plain Lion: step 2 has c = (0.014, 0.069) > 0, so both move by −0.5 again.
    torch.testing.assert_close(plain.detach(), torch.tensor([-1.0, -1.0]))
    # Grams makes element 0's direction sign(−0.1) = −1, which agrees with its
    # gradient, so cautious keeps both (scale 2/3) in both steps.
    torch.testing.assert_close(p.detach(), torch.tensor([-1 / 3 + 1 / 3, -2 / 3]), rtol=0, atol=1e-6)
