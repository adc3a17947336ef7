"""MLorc-DAdapt-Lion as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class DAdaptLion(MlorcOptimizer):
    """D-Adapted Lion, as facebookresearch/dadaptation's ``DAdaptLion``, whose
    momentum is kept as rank-`rank` factors (MLorc) for large matrices and
    densely for the rest: W ← W·(1 − dlr·λ) − dlr·sign(β1·m + (1−β1)·g),
    m ← β2·m + (1−β2)·dlr·g, with dlr = d·lr and d estimated from the run,
    starting at ``d0``: keep lr at 1 (or a schedule around 1).

    Each param group has its own estimate, in ``param_groups[i]["d"]`` after
    every step and saved with ``state_dict()``; its statistics sample every
    ``stats_stride``-th element (1 = exact). ``step_param`` / step hooks are
    refused: the estimate is a reduction over the whole group.

    Args: as mlorc.torch.Lion without grams and cautious, plus d0 and
    stats_stride. Defaults are the reference's: lr 1, betas (0.9, 0.99),
    weight_decay 0.

    ``master_weights`` and ``stochastic_rounding`` (bfloat16 / float16
    parameters) as in mlorc.torch.AdamW.
    """

    _rule = "dadapt_lion"
    _adapts_step_size = True

    def __init__(self, params, lr=1.0, betas=(0.9, 0.99), weight_decay=0.0, *, d0=1e-6, stats_stride=11,
                 rank=4, oversampling=0, power_iterations=0, seed=0, threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True,
                 orthograd=False, clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        lr=lr, betas=tuple(betas), weight_decay=weight_decay, d0=d0, stats_stride=stats_stride,
                        rank=rank, oversampling=oversampling, power_iterations=power_iterations, seed=seed,
                        threads=threads, orthograd=orthograd, clip_norm=clip_norm)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], d0=group["d0"],
                    stats_stride=group["stats_stride"], rank=group["rank"], oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"], seed=group["seed"],
                    threads=self._threads(group), orthograd=int(bool(group["orthograd"])),
                    clip_norm=float(group["clip_norm"]))
