"""MLorc-Prodigy as a torch.optim.Optimizer."""
import math

from .optimizer import MlorcOptimizer


class Prodigy(MlorcOptimizer):
    """Prodigy (Mishchenko & Defazio 2023, arXiv 2306.06101), as prodigyopt's
    ``Prodigy``, whose Adam moments are kept as rank-`rank` factors (MLorc)
    for large matrices and densely for the rest. The step size is d·lr, where
    d is estimated from the gradients and the distance travelled, starting at
    ``d0``: keep lr at 1 (or a schedule around 1).

    Each param group has its own estimate (prodigyopt shares the first group's
    across groups); it is in ``param_groups[i]["d"]`` after every step and
    saved with ``state_dict()``. The estimate's statistics sample every
    ``stats_stride``-th element of each tensor (prodigyopt's ``slice_p``;
    1 = exact, 11 = 1/11 of the memory). ``step_param`` / step hooks are
    refused: the estimate is a reduction over the whole group.

    Args: as mlorc.torch.AdamW, plus beta3 (None: √β2), d0, d_coef,
    growth_rate and stats_stride. Defaults are prodigyopt's: lr 1, betas
    (0.9, 0.999), eps 1e-8, weight_decay 0 (decoupled), no bias correction.
    """

    _rule = "prodigy"
    _adapts_step_size = True

    def __init__(self, params, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, *,
                 d0=1e-6, d_coef=1.0, growth_rate=math.inf, stats_stride=11, bias_correction=False,
                 rank=4, oversampling=0, power_iterations=0, seed=0, threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True,
                 atan2=False, grams=False, cautious=False, orthograd=False, clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        lr=lr, betas=tuple(betas), beta3=beta3, eps=eps, weight_decay=weight_decay, d0=d0,
                        d_coef=d_coef, growth_rate=growth_rate, stats_stride=stats_stride,
                        bias_correction=bias_correction, rank=rank, oversampling=oversampling,
                        power_iterations=power_iterations, seed=seed, threads=threads, atan2=atan2,
                        grams=grams, cautious=cautious, orthograd=orthograd, clip_norm=clip_norm)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        beta3 = math.sqrt(beta2) if group["beta3"] is None else group["beta3"]
        return dict(beta1=beta1, beta2=beta2, beta3=beta3, eps=group["eps"], weight_decay=group["weight_decay"],
                    d0=group["d0"], d_coef=group["d_coef"], growth_rate=group["growth_rate"],
                    stats_stride=group["stats_stride"], bias_correction=1 if group["bias_correction"] else 0,
                    rank=group["rank"], oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"], seed=group["seed"],
                    threads=self._threads(group), atan2=int(bool(group["atan2"])), **self._options(group))
