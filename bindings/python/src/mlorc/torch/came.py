"""CAME as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class CAME(MlorcOptimizer):
    """CAME (Luo et al. 2023, arXiv 2307.02047) with the arguments of the
    authors' came_pytorch.CAME: Adafactor's factored second moment (row and
    column means of g² + eps[0]), the normalised update clipped to RMS
    ``clip_threshold``, its momentum m (betas[0]), and the confidence factor
    from the factored instability (m − û)² + eps[1] (betas[2]):
    W ← W·(1 − lr·λ) − lr·m/√S. 1-D parameters keep an unfactored second
    moment and step by lr·m, as in the authors' code. m is kept as
    rank-`rank` factors (MLorc) for large matrices and densely for the rest
    (``compress`` as in mlorc.torch.AdamW). The update options of the other
    optimizers (Grams, cautious, OrthoGrad, clipping) do not apply.

    ``master_weights`` and ``stochastic_rounding`` (bfloat16 / float16
    parameters) as in mlorc.torch.AdamW.
    """

    _rule = "came"

    def __init__(self, params, lr=2e-4, eps=(1e-30, 1e-16), clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                 weight_decay=0.0, *, rank=4, oversampling=0, power_iterations=0, seed=0, threads=None,
                 compress=None, master_weights=False,
                 stochastic_rounding=True):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        lr=lr, eps=tuple(eps), clip_threshold=clip_threshold, betas=tuple(betas),
                        weight_decay=weight_decay, rank=rank, oversampling=oversampling,
                        power_iterations=power_iterations, seed=seed, threads=threads)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2, beta3 = group["betas"]
        eps1, eps2 = group["eps"]
        return dict(beta1=beta1, beta2=beta2, beta3=beta3, eps=eps1, eps2=eps2,
                    came_clip=group["clip_threshold"], weight_decay=group["weight_decay"],
                    rank=group["rank"], oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"], seed=group["seed"],
                    threads=self._threads(group))
