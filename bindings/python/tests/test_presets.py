"""mlorc.presets: which matrices are compressed (exact lists, on the demo's
MiniLM and on tiny GPT-2 / LLaMA / Mistral / Qwen2 models), that an
optimizer built from them stores exactly those low-rank, and that one step
updates every trainable parameter."""
import pytest
import torch

import mlorc
import mlorc.presets
import mlorc.torch
from hf_models import MINILM_LAYERS, SENTENCES, minilm_encoder, minilm_tokenizer, tiny_causal_lm

BERT_LAYER = ["attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
              "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight"]
LLAMA_LAYER = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
               "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
EXPECTED = {
    "gpt2": [f"transformer.h.{i}.{n}" for i in range(2)
             for n in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")],
    "llama": [f"model.layers.{i}.{n}" for i in range(2) for n in LLAMA_LAYER],
    "mistral": [f"model.layers.{i}.{n}" for i in range(2) for n in LLAMA_LAYER],
    "qwen2": [f"model.layers.{i}.{n}" for i in range(2) for n in LLAMA_LAYER],
}


@pytest.fixture(scope="module")
def encoder():
    return minilm_encoder()


def storages(model, opt):
    """Parameter name -> the storage of its state (states exist after a step)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)]: mlorc.inspect_state(opt.state[p]["mlorc_state"])["storage"]
            for group in opt.param_groups for p in group["params"]}


def encoder_loss(encoder):
    tokens = minilm_tokenizer()(SENTENCES[:4], padding=True, return_tensors="pt")

    def loss(model):
        hidden = model(**tokens).last_hidden_state
        return (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum() / hidden.shape[0]

    return loss


def step_changes_every_parameter(model, opt, loss_of):
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.zero_grad()
    loss_of(model).backward()
    opt.step()
    return sorted(n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n]))


def test_minilm_compresses_exactly_attention_and_mlp_matrices(encoder):
    expected = [f"encoder.layer.{i}.{n}" for i in range(MINILM_LAYERS) for n in BERT_LAYER]
    assert mlorc.presets.preset_for(encoder) == "bert"
    assert mlorc.presets.compressed_names(encoder) == expected
    # Everything else (embeddings, LayerNorms, biases) is dense.
    groups = mlorc.presets.param_groups(encoder)
    assert [g["compress"] for g in groups] == ["lowrank", False]
    assert [n for n, _ in groups[0]["params"]] == expected
    assert len(groups[1]["params"]) == len(list(encoder.parameters())) - len(expected)


def test_minilm_step_updates_every_trainable_parameter(encoder):
    # No weight decay: a parameter changes only if its gradient reached the optimizer.
    opt = mlorc.torch.AdamW(mlorc.presets.param_groups(encoder), lr=1e-3, weight_decay=0.0, rank=4)
    assert step_changes_every_parameter(encoder, opt, encoder_loss(encoder)) == []
    expected = set(mlorc.presets.compressed_names(encoder))
    stored = storages(encoder, opt)
    assert {n for n, s in stored.items() if s == "lowrank"} == expected
    assert {n for n, s in stored.items() if s == "dense"} == {n for n, _ in encoder.named_parameters()} - expected


def test_param_groups_split_weight_decay(encoder):
    groups = mlorc.presets.param_groups(encoder, weight_decay=0.01)
    assert [(g["compress"], g["weight_decay"]) for g in groups] == [("lowrank", 0.01), (False, 0.01), (False, 0.0)]
    dense_decayed = [n for n, _ in groups[1]["params"]]
    assert dense_decayed == ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                             "embeddings.token_type_embeddings.weight"]
    assert all(n.endswith(".bias") or "LayerNorm" in n for n, _ in groups[2]["params"])


@pytest.mark.parametrize("model_type", sorted(EXPECTED))
def test_causal_lm_families(model_type):
    model = tiny_causal_lm(model_type)
    assert mlorc.presets.compressed_names(model) == EXPECTED[model_type]
    opt = mlorc.torch.AdamW(mlorc.presets.param_groups(model), lr=1e-2, weight_decay=0.0, rank=2)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    assert step_changes_every_parameter(model, opt, lambda m: m(input_ids=ids, labels=ids).loss) == []
    assert {n for n, s in storages(model, opt).items() if s == "lowrank"} == set(EXPECTED[model_type])


def test_compress_policy_matches_names_by_identity(encoder):
    # Plain parameter lists (no names), as Hugging Face Trainer passes them.
    opt = mlorc.torch.AdamW(encoder.parameters(), lr=1e-3, rank=4, compress=mlorc.presets.compress_policy(encoder))
    assert step_changes_every_parameter(encoder, opt, encoder_loss(encoder)) == []
    lowrank = {n for n, s in storages(encoder, opt).items() if s == "lowrank"}
    assert lowrank == set(mlorc.presets.compressed_names(encoder))


def test_compress_policy_refuses_a_parameter_of_another_model(encoder):
    policy = mlorc.presets.compress_policy(encoder)
    with pytest.raises(ValueError, match="not one of that model's"):
        mlorc.torch.AdamW([torch.nn.Parameter(torch.zeros(8, 8))], compress=policy)


def test_unknown_model_type_and_preset_are_refused(encoder):
    with pytest.raises(ValueError, match="no compress preset for model type None"):
        mlorc.presets.param_groups(torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="unknown preset 't5'"):
        mlorc.presets.compressed_names(encoder, preset="t5")
    with pytest.raises(TypeError, match="preset= or patterns="):
        mlorc.presets.compressed_names(encoder, preset="bert", patterns=["query"])


def test_custom_patterns(encoder):
    names = mlorc.presets.compressed_names(encoder, patterns=["attention.self.query"])
    assert names == [f"encoder.layer.{i}.attention.self.query.weight" for i in range(MINILM_LAYERS)]


def test_frozen_parameters_are_left_out():
    model = tiny_causal_lm("llama")
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)
    model.model.embed_tokens.weight.requires_grad_(False)
    assert mlorc.presets.compressed_names(model) == EXPECTED["llama"][1:]
    grouped = [n for g in mlorc.presets.param_groups(model) for n, _ in g["params"]]
    assert sorted(grouped) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
