"""MLorc-Lion as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class Lion(MlorcOptimizer):
    """Lion (Chen et al. 2023) whose momentum is kept as rank-`rank` factors
    (MLorc) for large matrices and densely for the rest:
    W ← W·(1 − lr·λ) − lr·sign(β1·m + (1−β1)·g);  m ← β2·m + (1−β2)·g.

    Args: as mlorc.torch.AdamW, without eps, bias_correction and atan2.
    Defaults are the paper's: betas (0.95, 0.98), weight_decay 0.05.
    """

    _rule = "lion"

    def __init__(self, params, lr=1e-4, betas=(0.95, 0.98), weight_decay=0.05, *, rank=4,
                 oversampling=0, power_iterations=0, seed=0, threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True, state_dtype="f32",
                 grams=False, cautious=False, orthograd=False, clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding, state_dtype=state_dtype,
                        lr=lr, betas=tuple(betas), weight_decay=weight_decay, rank=rank,
                        oversampling=oversampling, power_iterations=power_iterations, seed=seed,
                        threads=threads, grams=grams, cautious=cautious, orthograd=orthograd,
                        clip_norm=clip_norm)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], rank=group["rank"],
                    oversampling=group["oversampling"], power_iterations=group["power_iterations"],
                    seed=group["seed"], threads=self._threads(group), **self._options(group))
