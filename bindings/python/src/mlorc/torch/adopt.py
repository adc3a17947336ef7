"""MLorc-ADOPT as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class Adopt(MlorcOptimizer):
    """ADOPT (Taniguchi et al. 2024, arXiv 2411.02853) whose moments are kept
    as rank-`rank` factors (MLorc) for large matrices and densely for the rest:
    n = g / max(√v, ε) (clipped to ±(t−1)^¼ with ``clip=True``),
    m ← β1·m + (1−β1)·n, W ← W·(1 − lr·λ) − lr·m, v ← β2·v + (1−β2)·g².
    The first step only initialises v = g² and leaves the weights unchanged.

    Args: as mlorc.torch.AdamW without bias_correction, plus ``clip``;
    ``atan2`` replaces g/max(√v, ε) by (4/π)·atan2(g, √v).
    Defaults are the paper's: betas (0.9, 0.9999), eps 1e-6, weight_decay 0.
    """

    _rule = "adopt"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0, *,
                 clip=False, rank=4, oversampling=0, power_iterations=0, seed=0, threads=None,
                 compress=None, master_weights=False,
                 stochastic_rounding=True, state_dtype="f32", atan2=False, grams=False, cautious=False, orthograd=False,
                 clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding, state_dtype=state_dtype,
                        lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, clip=clip,
                        rank=rank, oversampling=oversampling, power_iterations=power_iterations,
                        seed=seed, threads=threads, atan2=atan2, grams=grams, cautious=cautious,
                        orthograd=orthograd, clip_norm=clip_norm)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                    adopt_clip=1 if group["clip"] else 0, rank=group["rank"],
                    oversampling=group["oversampling"], power_iterations=group["power_iterations"],
                    seed=group["seed"], threads=self._threads(group), atan2=int(bool(group["atan2"])),
                    **self._options(group))
