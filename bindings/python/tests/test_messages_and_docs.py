"""What the errors advise must be right, and the docs must list every rule."""
import os

import pytest
import torch

import mlorc
from mlorc import _native

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_complex_parameters_are_told_to_use_view_as_real():
    z = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="view_as_real") as info:
        mlorc.torch.AdamW([z])
    assert "model.float()" not in str(info.value)  # that would drop the imaginary part
    # The advice works: the real view is a float32 parameter mlorc steps, and
    # view_as_complex of it gives the complex tensor back.
    w = torch.nn.Parameter(torch.view_as_real(z.detach().to(torch.complex64)))
    opt = mlorc.torch.AdamW([w], lr=1e-2)
    torch.view_as_complex(w).abs().sum().backward()
    opt.step()
    assert w.shape == (4, 3, 2) and torch.equal(torch.view_as_complex(w.detach()).real, w.detach()[..., 0])


@pytest.mark.parametrize("key, value, text", [("rank", 0, "rank = 0 is outside [1, 65536]"),
                                              ("threads", 300, "threads = 300 is outside [1, 256]"),
                                              ("oversampling", -1, "oversampling = -1 is outside [0, 1024]")])
def test_integer_settings_are_reported_as_integers(key, value, text):
    with pytest.raises(ValueError) as info:
        mlorc.torch.AdamW(torch.nn.Linear(4, 4).parameters(), **{key: value})
    assert str(info.value) == f"parameter group 0: {text}"
    with pytest.raises(mlorc.MlorcError) as info:
        mlorc.Optimizer("lion", **{key: value})
    assert info.value.status == mlorc._mlorc.ERROR_PARAM_OUT_OF_RANGE and info.value.message == text
    with pytest.raises(mlorc.MlorcError, match="must be an integer, got 2.5"):
        mlorc.Optimizer("adamw", rank=2.5)


def test_channels_last_advice_keeps_channels_last():
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    with pytest.raises(ValueError) as info:
        mlorc.torch.AdamW(conv.named_parameters())
    message = str(info.value)
    assert "'weight' is in torch.channels_last memory format" in message
    assert ".contiguous()" not in message and "x.to(memory_format=torch.channels_last)" in message
    # What it advises: contiguous weights, channels_last input; the convolution
    # still computes channels_last, and mlorc steps it.
    conv = torch.nn.Conv2d(3, 8, 3)
    opt = mlorc.torch.AdamW(conv.parameters(), lr=1e-2)
    out = conv(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    out.square().mean().backward()
    opt.step()
    # Other non-contiguous layouts keep the generic advice, with the strides.
    with pytest.raises(ValueError, match=r"not contiguous \(strides \(1, 4\) for shape \(4, 8\)"):
        mlorc.torch.AdamW([torch.nn.Parameter(torch.randn(8, 4).t())])


def test_readme_and_docstrings_list_every_rule():
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    classes = [name for name in mlorc.torch.__all__ if name != "MlorcOptimizer"
               and isinstance(getattr(mlorc.torch, name), type)]  # not helpers such as named()
    assert len(_native.RULES) == len(classes) == 8
    for name in classes:
        assert f"`{name}`" in readme, name
        assert getattr(mlorc.torch, name)._rule in _native.RULES
    for rule in _native.RULES:
        assert f'`"{rule}"`' in readme, rule
        assert f"'{rule}'" in mlorc.__doc__ and f"'{rule}'" in mlorc.Optimizer.__doc__, rule
    for name in classes:
        assert name in mlorc.__doc__ and name in mlorc.torch.__doc__, name
