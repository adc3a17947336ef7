"""mlorc: Python front of libmlorc, memory-efficient optimizers whose
momenta are kept as low-rank factors (MLorc, arXiv 2506.01897).

- mlorc.Optimizer: NumPy arrays updated in place (mlorc.numpy), for the rules
  'adamw', 'lion', 'adopt', 'galore_adamw', 'came', 'prodigy', 'dadapt_lion'
  and 'mofasgd'.
- mlorc.torch.AdamW / Lion / Adopt / GaLoreAdamW / CAME / Prodigy / DAdaptLion
  / MoFaSGD: torch.optim.Optimizer subclasses (imported on first use, so
  NumPy users need no torch).
- mlorc.memory_report(model): optimizer memory of a model, MLorc vs dense AdamW.
- mlorc.presets: which matrices of a BERT / GPT-2 / LLaMA model to compress
  (the paper's practice), as param groups or a compress= policy.
- python -m mlorc: versions, library, kernels, BLAS, threads (mlorc.diagnostics).
"""
import importlib

from ._native import MlorcError, inspect_group_state, inspect_state
from ._native import _mlorc as _ext
from .memory import memory_report
from .numpy import Optimizer

__version__ = _ext.version_string()
library_version = _ext.version_string()

__all__ = ["MlorcError", "Optimizer", "inspect_group_state", "inspect_state", "memory_report", "library_version"]


def __getattr__(name):
    if name in ("torch", "numpy", "presets"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mlorc' has no attribute {name!r}")
