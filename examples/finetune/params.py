"""Which parameters MLorc / GaLore compress, and the param groups every
optimizer of the demo gets (the same weight-decay split for all)."""
import torch

# The weight matrices MLorc compresses (names inside BertModel's encoder
# layers), as in the MLorc paper: attention and MLP.
LOWRANK_SUFFIXES = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
)


def param_kind(name, p):
    """'lowrank', 'dense' (decayed) or 'nodecay' (biases, LayerNorms)."""
    if name.endswith(LOWRANK_SUFFIXES) and name.startswith("encoder.encoder.layer."):
        return "lowrank"
    if p.dim() < 2 or "LayerNorm" in name:
        return "nodecay"
    return "dense"  # embeddings, classification head, LoRA adapters


def param_groups(model, weight_decay, mlorc):
    """Param groups of the trainable parameters: low-rank matrices, dense
    matrices (both decayed), and biases / LayerNorms (no decay). For mlorc
    each group also says whether it is compressed; torch.optim.AdamW gets the
    same groups without that."""
    kinds = {"lowrank": [], "dense": [], "nodecay": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            kinds[param_kind(name, p)].append(p)
    groups = [
        {"params": kinds["lowrank"], "weight_decay": weight_decay},
        {"params": kinds["dense"], "weight_decay": weight_decay},
        {"params": kinds["nodecay"], "weight_decay": 0.0},
    ]
    if mlorc:
        # "lowrank" (not True): an error, rather than silently dense, should
        # a selected matrix be too small for the rank.
        for group, compress in zip(groups, ("lowrank", False, False)):
            group["compress"] = compress
    return [g for g in groups if g["params"]]


def state_bytes_by_kind(opt, model):
    """State bytes of the compressed matrices and of all other parameters
    (after training, when every state exists)."""
    kind_of = {p: param_kind(n, p) for n, p in model.named_parameters()}
    out = {"lowrank_matrices": 0, "other": 0}
    for p, s in opt.state.items():
        size = sum(v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v))
        out["lowrank_matrices" if kind_of[p] == "lowrank" else "other"] += size
    return out
