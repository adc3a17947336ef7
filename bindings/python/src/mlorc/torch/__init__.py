"""PyTorch optimizers backed by libmlorc: AdamW, Lion, Adopt, GaLoreAdamW,
CAME, Prodigy, DAdaptLion and MoFaSGD.

    opt = mlorc.torch.AdamW(model.parameters(), lr=1e-4, rank=4)

Parameters must be plain CPU float32 contiguous tensors; they are updated in place.
Name them (model.named_parameters(), or mlorc.torch.named(model) for wrappers
such as ZeroRedundancyOptimizer that take plain tensors) to make their tensor
ids, hence the results and checkpoints, independent of how the optimizer is
built or partitioned.
"""
from .adamw import AdamW
from .adopt import Adopt
from .came import CAME
from .dadapt_lion import DAdaptLion
from .galore import GaLoreAdamW
from .lion import Lion
from .mofasgd import MoFaSGD
from .names import named
from .optimizer import MlorcOptimizer
from .prodigy import Prodigy

__all__ = ["AdamW", "Adopt", "CAME", "DAdaptLion", "GaLoreAdamW", "Lion", "MlorcOptimizer", "MoFaSGD", "Prodigy", "named"]
