"""MLorc-AdamW as a torch.optim.Optimizer."""
from .optimizer import MlorcOptimizer


class AdamW(MlorcOptimizer):
    """Drop-in for torch.optim.AdamW whose moments are kept as rank-`rank`
    factors (MLorc) for large matrices and densely for the rest.

    At full rank, or with dense storage, the step equals torch.optim.AdamW's
    (same ε placement, bias correction and decoupled weight decay) up to float
    rounding.

    Args:
        params: parameters, named_parameters() or param-group dicts. A group may
            set any argument below, including ``compress``.
        lr, betas, eps, weight_decay: as torch.optim.AdamW.
        maximize: maximize the objective (the step uses -grad), as
            torch.optim.AdamW; p.grad is not modified (a negated copy of each
            gradient is made for the step).
        amsgrad, foreach, fused, capturable, differentiable: accepted at
            torch's defaults (False; None or False for foreach and fused) so
            that code passing them works; other values raise ValueError
            (see mlorc.torch.torch_flags).
        rank: rank of the momentum factors (fixed when a state is created).
        oversampling: extra sketch columns of the randomized SVD.
        power_iterations: randomized-SVD power iterations.
        bias_correction: AdamW's bias correction (on by default).
        seed: seed of the sketch matrices (steps are deterministic).
        threads: threads of a native step (None: torch.get_num_threads()).
        atan2: (4/π)·atan2(m̂, √v̂) instead of m̂/(√v̂ + ε).
        grams, cautious, orthograd: update options (see mlorc.h), off by default.
        clip_norm: per-tensor gradient-norm bound (0: off).
        compress: which parameters are stored low-rank (see mlorc._policy):
            None (library's AUTO), a bool, a set of names or a callable
            (name_or_index, param) -> bool.
        master_weights: for bfloat16 / float16 parameters, keep an fp32 copy
            of the weights in the state (4 bytes per element) that the step
            updates, writing its rounding to the parameter (fixed when a state
            is created; ignored for float32 parameters).
        stochastic_rounding: round new bfloat16 weights stochastically (the
            default; bits keyed by seed, parameter, step and element, so runs
            are reproducible) or, with False, to nearest even.
        state_dtype: 'f32' (default) or 'bf16': keep the moments (dense) and
            the MLorc factors in bf16, halving the state (stochastically
            rounded with stochastic_rounding; fixed when a state is created).
    """

    _rule = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 rank=4, oversampling=0, power_iterations=0, bias_correction=True, seed=0,
                 threads=None, compress=None, master_weights=False,
                 stochastic_rounding=True, state_dtype="f32", atan2=False, grams=False, cautious=False,
                 orthograd=False, clip_norm=0.0):
        defaults = dict(master_weights=master_weights, stochastic_rounding=stochastic_rounding, state_dtype=state_dtype,
                        lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        oversampling=oversampling, power_iterations=power_iterations,
                        bias_correction=bias_correction, seed=seed, threads=threads, atan2=atan2,
                        grams=grams, cautious=cautious, orthograd=orthograd, clip_norm=clip_norm,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults, compress=compress)

    def _settings(self, group):
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                    rank=group["rank"], oversampling=group["oversampling"],
                    power_iterations=group["power_iterations"],
                    bias_correction=1 if group["bias_correction"] else 0,
                    seed=group["seed"], threads=self._threads(group), atan2=int(bool(group["atan2"])),
                    **self._options(group))
