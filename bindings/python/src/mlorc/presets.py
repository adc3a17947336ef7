"""Which matrices of a transformer to compress: the MLorc paper's practice.

The paper compresses the projection matrices of attention and of the MLP and
keeps the rest dense (embeddings, norms, biases, output heads). A preset names
those projections by module-name patterns, as peft's `target_modules` does: a
module matches a pattern when its name is the pattern or ends with "." and
the pattern; the preset compresses the `weight` matrix of every matching
module, and nothing else.

    import mlorc.presets, mlorc.torch
    groups = mlorc.presets.param_groups(model)            # preset from model.config.model_type
    opt = mlorc.torch.AdamW(groups, lr=1e-4, rank=4)

    # or, where something else builds the param groups (Hugging Face Trainer's
    # optimizer_cls_and_kwargs), a compress= policy that knows the model:
    opt = mlorc.torch.AdamW(model.parameters(), compress=mlorc.presets.compress_policy(model))

Selected matrices are requested as "lowrank": one too small for the rank is
an error, not silently dense.
"""
import re

# Module-name patterns of the attention and MLP projections, per family.
PRESETS = {
    # BertLayer: attention.self.{query,key,value}, attention.output.dense,
    # intermediate.dense (MLP up), output.dense (MLP down).
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"),
    # GPT2Block: attn.c_attn (fused q, k, v), attn.c_proj, mlp.c_fc, mlp.c_proj (Conv1D weights, in x out).
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    # LlamaDecoderLayer: self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj.
    "llama": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
}

# transformers' config.model_type -> preset, for the families whose layers use
# exactly those module names.
MODEL_TYPES = {"bert": "bert", "roberta": "bert", "gpt2": "gpt2", "llama": "llama", "mistral": "llama",
               "qwen2": "llama"}


def preset_for(model):
    """The preset name for a transformers model, from model.config.model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"no compress preset for model type {model_type!r}; known: {sorted(MODEL_TYPES)}. "
                         f"Pass preset= one of {sorted(PRESETS)} or patterns= (module-name patterns)")
    return MODEL_TYPES[model_type]


def _patterns(model, preset, patterns):
    if patterns is not None:
        if preset is not None:
            raise TypeError("pass preset= or patterns=, not both")
        if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
            raise TypeError("patterns= must be a list of module-name patterns (non-empty strings)")
        return tuple(patterns)
    if preset is None:
        preset = preset_for(model)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def _matches(module_name, patterns):
    return any(module_name == p or module_name.endswith("." + p) for p in patterns)


def compressed_names(model, preset=None, patterns=None):
    """Names (in model.named_parameters() order) of the trainable parameters
    the preset compresses: the 2-D `weight` of every matching module."""
    patterns = _patterns(model, preset, patterns)
    names = []
    for module_name, module in model.named_modules():
        if not _matches(module_name, patterns):
            continue
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        if weight is not None and weight.requires_grad and weight.dim() == 2:
            names.append(f"{module_name}.weight")
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    # A weight shared with another module (tied) is listed under its first name only.
    return sorted((n for n in names if n in order), key=order.__getitem__)


def compress_policy(model, preset=None, patterns=None):
    """A compress= callable for mlorc.torch optimizers: True (low-rank) for the
    preset's matrices of this model, False (dense) for every other parameter.
    It knows parameters by identity, so it works where the optimizer gets
    plain parameter lists (as from Hugging Face Trainer)."""
    params = dict(model.named_parameters())
    chosen = {id(params[n]) for n in compressed_names(model, preset, patterns)}
    known = {id(p) for p in params.values()}

    def policy(key, param):
        if id(param) not in known:
            raise ValueError(f"compress policy of a {type(model).__name__}: parameter {key!r} "
                             f"(shape {tuple(param.shape)}) is not one of that model's")
        return id(param) in chosen

    return policy


def param_groups(model, preset=None, patterns=None, weight_decay=None, no_decay=r"bias$|norm|ln_"):
    """Param groups for an mlorc.torch optimizer: the preset's matrices
    ("compress": "lowrank") and every other trainable parameter
    ("compress": False), as (name, parameter) pairs so that errors name them.
    With weight_decay=, the compressed and dense groups get it and parameters
    whose names match `no_decay` (biases, norms) go to a third dense group
    with weight decay 0, the usual transformer fine-tuning practice."""
    chosen = set(compressed_names(model, preset, patterns))
    lowrank, dense, undecayed = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in chosen:
            lowrank.append((name, p))
        elif weight_decay is not None and re.search(no_decay, name, re.I):
            undecayed.append((name, p))
        else:
            dense.append((name, p))
    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    groups = [{"params": lowrank, "compress": "lowrank", **decay}, {"params": dense, "compress": False, **decay},
              {"params": undecayed, "compress": False, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
