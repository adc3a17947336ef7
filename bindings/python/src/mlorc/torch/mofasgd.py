"""MoFaSGD, the low-rank-momentum baseline, as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class MoFaSGD(MlorcOptimizer):
    """MoFaSGD (Mahdavinia & Mahdavi 2025, arXiv 2507.08091): the momentum
    itself is kept as rank-`rank` factors U·diag(σ)·Vᵀ, updated each step on
    the tangent space of the factors (M ← SVD_r(β·M + projected G)), and the
    weights move along the spectrally normalised U·Vᵀ:
    W ← W·(1 − lr·λ) − lr·U·Vᵀ. With ``reciprocal=True`` the direction is
    U·diag(min(1/σ, max_value))·Vᵀ, the setting of the authors' experiment
    configs. Tensors the policy keeps dense (vectors, small matrices) get
    MoFaSGD at full rank (a vector steps along M/‖M‖).

    Args: lr (1e-2, the authors' default), beta (momentum, 0.9), eps
    (singular values at or below it give no update, 1e-8), weight_decay
    (decoupled, 0), and keyword-only rank (4), reciprocal, max_value (1e4),
    oversampling / power_iterations / seed (the first step's randomized SVD),
    threads, compress (low-rank storage needs 2·rank <= min(rows, cols)).

    ``master_weights`` and ``stochastic_rounding`` (bfloat16 / float16
    parameters) as in mlorc.torch.AdamW.
    """

    _rule = "mofasgd"

    def __init__(self, params, lr=1e-2, beta=0.9, eps=1e-8, weight_decay=0.0, *, rank=4,
                 reciprocal=False, max_value=1e4, oversampling=0, power_iterations=0, seed=0,
                 threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                        lr=lr, beta=beta, eps=eps, weight_decay=weight_decay, rank=rank,
                        reciprocal=reciprocal, max_value=max_value, oversampling=oversampling,
                        power_iterations=power_iterations, seed=seed, threads=threads)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        return dict(beta1=group["beta"], eps=group["eps"], weight_decay=group["weight_decay"],
                    rank=group["rank"], mofasgd_reciprocal=int(bool(group["reciprocal"])),
                    mofasgd_max_value=float(group["max_value"]), oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"], seed=group["seed"],
                    threads=self._threads(group))
