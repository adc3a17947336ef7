"""mlorc.torch.GaLoreAdamW: a real training with the projected-gradient baseline."""

import mlorc
from test_training_digits import train_on_digits


def test_galore_rank4_learns_digits():
    model, opt, accuracy = train_on_digits(
        lambda params: mlorc.torch.GaLoreAdamW(params, lr=1e-2, rank=4, update_proj_gap=50, scale=1.0))
    info = mlorc.inspect_state(opt.state[model[0].weight]["mlorc_state"].numpy())
    assert info["storage"] == "lowrank" and info["rank"] == 4
    # The projection (4 x 64) and projected moments (2 x 4 x 128) of the first layer.
    assert opt.state[model[0].weight]["mlorc_state"].numel() == 128 + 4 * 4 * (64 + 2 * 128)
    assert opt.state_bytes() < 0.15 * opt.dense_adamw_state_bytes()
    # Seen: 0.93 (MLorc-AdamW with its recipe: 0.95); chance is 0.10.
    assert accuracy >= 0.90, accuracy
