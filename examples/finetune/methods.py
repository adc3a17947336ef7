"""The demo's rows: how each method prepares the model, builds its optimizer
and counts the memory it keeps for training.

Full fine-tuning rows (torch AdamW, MLorc-AdamW, MLorc-Lion, GaLore-AdamW)
train every parameter; MLorc and GaLore compress the attention and MLP
matrices (param_kind "lowrank"). The LoRA rows freeze the encoder, add rank-r
adapters (peft) to the same 36 matrices and train them and the head with
torch AdamW.
"""
from dataclasses import dataclass

import torch

from params import param_groups

# The learning rates the sweep chose (sweep.py: 60 steps of 32, seed 0,
# trained on the training set less a 20% validation split and judged on that
# split; the held-out set unused). The figures are in
# examples/finetune/README.md; the default run uses these rates as they are.
CHOSEN_LR = {
    "adamw": 1e-4,         # validation 93.2% (3e-5: 89.7, 3e-4: 92.9)
    "mlorc-adamw": 3e-4,   # 92.8% (3e-5: 85.9, 1e-4: 92.7, 1e-3: 92.4)
    "mlorc-lion": 1e-4,    # 92.4% (1e-5: 82.2, 3e-5: 92.1, 3e-4: 92.0)
    "galore-adamw": 1e-3,  # 94.3% (1e-4: 65.1, 3e-4: 82.5, 3e-3: 92.8)
    "lora-r4": 1e-3,       # 92.7% (3e-4: 79.9, 3e-3: 92.3)
    "lora-r8": 1e-3,       # 92.7% (3e-4: 88.0, 3e-3: 92.0)
}

# The modules of a BERT-family encoder layer LoRA adapts: query, key, value
# and the three "dense" projections (attention output, intermediate, output).
LORA_TARGETS = ["query", "key", "value", "dense"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: str            # "full" or "lora"
    rank: int            # MLorc / GaLore / LoRA rank
    rule: str            # the optimizer: "adamw" (torch's), "mlorc-adamw", "mlorc-lion", "galore-adamw"

    @property
    def weight_decay_key(self):
        return "wd_lion" if self.rule == "mlorc-lion" else "wd_adamw"


def methods(rank):
    """The six rows, in table order; `rank` is the compressed methods' rank
    (LoRA runs at ranks 4 and 8 whatever it is)."""
    return {
        "adamw": Method("adamw", "torch AdamW", "full", 0, "adamw"),
        "mlorc-adamw": Method("mlorc-adamw", f"MLorc-AdamW r{rank}", "full", rank, "mlorc-adamw"),
        "mlorc-lion": Method("mlorc-lion", f"MLorc-Lion r{rank}", "full", rank, "mlorc-lion"),
        "galore-adamw": Method("galore-adamw", f"GaLore-AdamW r{rank}", "full", rank, "galore-adamw"),
        "lora-r4": Method("lora-r4", "LoRA r4 (peft)", "lora", 4, "adamw"),
        "lora-r8": Method("lora-r8", "LoRA r8 (peft)", "lora", 8, "adamw"),
    }


NAMES = tuple(methods(4))


def add_lora(model, rank):
    """Freezes `model` but its head and injects rank-`rank` LoRA adapters
    (alpha = 2·rank, no adapter dropout) into LORA_TARGETS of its encoder.
    The adapters' B starts at zero: the model computes what it did before."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                        target_modules=LORA_TARGETS)
    inject_adapter_in_model(config, model.encoder)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    model.head.requires_grad_(True)
    return model


def prepare_model(method, model):
    """The model `method` trains (LoRA: adapters added, the rest frozen)."""
    return add_lora(model, method.rank) if method.kind == "lora" else model


def make_optimizer(method, model, lr, weight_decay, threads, seed):
    if method.rule == "adamw":
        return torch.optim.AdamW(param_groups(model, weight_decay, mlorc=False), lr=lr)
    import mlorc.torch

    groups = param_groups(model, weight_decay, mlorc=True)
    common = dict(lr=lr, rank=method.rank, threads=threads, seed=seed)
    if method.rule == "mlorc-adamw":
        return mlorc.torch.AdamW(groups, **common)
    if method.rule == "mlorc-lion":
        return mlorc.torch.Lion(groups, **common)
    if method.rule == "galore-adamw":
        return mlorc.torch.GaLoreAdamW(groups, **common)
    raise ValueError(f"unknown method {method.name!r}")


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def optimizer_state_bytes(opt):
    """Bytes of optimizer state: mlorc's own count, or the sizes of every
    tensor torch.optim.AdamW keeps (its two moments and step counters)."""
    if hasattr(opt, "state_bytes"):
        return opt.state_bytes()
    return sum(tensor_bytes(s.values()) for s in opt.state.values())


def training_memory(method, opt, model):
    """What the method keeps for training beyond the pretrained weights:
    optimizer state, plus for LoRA the adapters' own weights (a LoRA row's
    "state bytes" = adapter parameters + the AdamW state of everything it
    trains, head included)."""
    state = optimizer_state_bytes(opt)
    adapters = tensor_bytes(p for n, p in model.named_parameters() if "lora_" in n)
    return {"optimizer_state": state, "adapter_parameters": adapters, "total": state + adapters}
