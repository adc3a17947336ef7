"""mlorc.torch optimizers inside Hugging Face's Trainer, both documented ways:
Trainer(optimizers=(opt, scheduler)) and
Trainer(optimizer_cls_and_kwargs=(mlorc.torch.AdamW, {...})), on the demo's
MiniLM with a sequence-classification head. Each run trains 3 steps and must
leave every trainable parameter changed, the preset's matrices low-rank, the
rest dense, and our optimizer's states at step 3."""
import inspect

import pytest
import torch
import transformers

import mlorc
import mlorc.presets
import mlorc.torch
from hf_models import LABELS, SENTENCES, minilm_classifier, minilm_tokenizer

STEPS = 3


class Sentences(torch.utils.data.Dataset):
    """The 8 sentences, padded to one length (the default collator stacks them)."""

    def __init__(self):
        self.tokens = minilm_tokenizer()(SENTENCES, padding="max_length", max_length=12, truncation=True,
                                         return_tensors="pt")

    def __len__(self):
        return len(SENTENCES)

    def __getitem__(self, i):
        return {"input_ids": self.tokens["input_ids"][i], "attention_mask": self.tokens["attention_mask"][i],
                "labels": torch.tensor(LABELS[i])}


def arguments(tmp_path, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=4, use_cpu=True, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0, **kw)


def train(trainer, model):
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    unchanged = sorted(n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n]))
    assert unchanged == []


def ours(trainer):
    """The mlorc optimizer behind Trainer's (accelerate wraps it)."""
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)
    assert isinstance(opt, mlorc.torch.AdamW), type(opt)
    return opt


def check_states(model, opt):
    by_id = {id(p): n for n, p in model.named_parameters()}
    infos = {by_id[id(p)]: mlorc.inspect_state(opt.state[p]["mlorc_state"])
             for g in opt.param_groups for p in g["params"]}
    assert {n for n, _ in model.named_parameters()} == set(infos)
    assert {n for n, i in infos.items() if i["storage"] == "lowrank"} == set(mlorc.presets.compressed_names(model))
    assert {i["step"] for i in infos.values()} == {STEPS}


def test_installed_trainer_takes_optimizer_cls_and_kwargs():
    assert "optimizer_cls_and_kwargs" in inspect.signature(transformers.Trainer.__init__).parameters


def test_trainer_with_optimizers_pair(tmp_path):
    model = minilm_classifier()
    opt = mlorc.torch.AdamW(mlorc.presets.param_groups(model, weight_decay=0.01), lr=2e-4, rank=4)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / STEPS)
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path), train_dataset=Sentences(),
                                   optimizers=(opt, schedule))
    train(trainer, model)
    assert ours(trainer) is opt
    check_states(model, opt)
    # Trainer stepped our scheduler once per optimizer step.
    assert schedule.last_epoch == STEPS
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0] * len(opt.param_groups), abs=1e-12)


def test_trainer_with_optimizer_cls_and_kwargs(tmp_path):
    model = minilm_classifier()
    kwargs = {"lr": 2e-4, "rank": 4, "compress": mlorc.presets.compress_policy(model)}
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path, weight_decay=0.01),
                                   train_dataset=Sentences(), optimizer_cls_and_kwargs=(mlorc.torch.AdamW, kwargs))
    train(trainer, model)
    opt = ours(trainer)
    check_states(model, opt)
    # Trainer's own groups: decayed weights, undecayed biases and LayerNorms.
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    # ... and its linear schedule from our lr down to 0 at max_steps.
    assert [g["initial_lr"] for g in opt.param_groups] == [2e-4, 2e-4]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0, 0.0], abs=1e-12)
