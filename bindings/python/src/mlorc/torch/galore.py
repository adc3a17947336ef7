"""GaLore-AdamW, the projected-gradient baseline, as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class GaLoreAdamW(MlorcOptimizer):
    """GaLore-AdamW (Zhao et al. 2024, arXiv 2403.03507): every
    ``update_proj_gap`` steps the gradient's top-`rank` singular vectors on its
    short side become the projection P (randomized SVD; the paper uses an exact
    one); AdamW runs on the projected gradient, and the weights move by
    ``scale``·P·(its direction). Low-rank storage holds P and the projected
    moments; tensors the policy keeps dense get plain AdamW.

    Args: as mlorc.torch.AdamW (without atan2, grams, cautious), plus
    ``scale`` (α, 0.25) and ``update_proj_gap`` (T, 200).
    """

    _rule = "galore_adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, *,
                 rank=4, scale=0.25, update_proj_gap=200, oversampling=0, power_iterations=0,
                 bias_correction=True, seed=0, threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True, orthograd=False,
                 clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        scale=scale, update_proj_gap=update_proj_gap, oversampling=oversampling,
                        power_iterations=power_iterations, bias_correction=bias_correction, seed=seed,
                        threads=threads, orthograd=orthograd, clip_norm=clip_norm)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                    rank=group["rank"], galore_scale=group["scale"],
                    galore_interval=group["update_proj_gap"], oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"],
                    bias_correction=1 if group["bias_correction"] else 0, seed=group["seed"],
                    threads=self._threads(group), orthograd=int(bool(group["orthograd"])),
                    clip_norm=float(group["clip_norm"]))
