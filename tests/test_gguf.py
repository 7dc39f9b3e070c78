"""GGUF import (minigrpo/models/gguf_convert.py): q/k un-permutation by hand, config from metadata, weights equal
to the dequantized Hugging Face tensors, logits equal to transformers' own GGUF reading, convert_gguf folders that
both libraries load, and errors for what cannot be imported."""

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf_tiny import SHAPE, TEXTS, permute, train_vocab, write_tiny_gguf  # noqa: E402

from minigrpo.models import convert_gguf, load_causal_lm, load_tokenizer  # noqa: E402
from minigrpo.models.gguf_convert import hf_config, un_permute  # noqa: E402
from minigrpo.models.gguf_reader import read_gguf  # noqa: E402

TOL = 1e-5  # same float32 weights on both sides: only summation order can differ


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{(arch, tied): (path, expected HF state dict)} of the tiny GGUFs."""
    folder = tmp_path_factory.mktemp("gguf")
    out = {}
    for arch, tied in (("llama", True), ("llama", False), ("qwen3", True)):
        path = folder / f"{arch}_{'tied' if tied else 'untied'}.gguf"
        out[arch, tied] = path, write_tiny_gguf(path, arch=arch, tied=tied)
    return out


def _ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, len(train_vocab()[0]), (2, 11), generator=g)  # (B, T)


# ---- un-permutation -----------------------------------------------------------------------------------------
def test_un_permute_by_hand_one_head():
    # HF rows [a0, a1, b0, b1] (halves a, b rotate together as (a_i, b_i)); llama.cpp stores the pairs side by
    # side: [a0, b0, a1, b1]
    gguf_rows = torch.tensor([[10.0], [20.0], [11.0], [21.0]])  # a0, b0, a1, b1
    assert un_permute(gguf_rows, 1).flatten().tolist() == [10.0, 11.0, 20.0, 21.0]


def test_un_permute_by_hand_two_heads_and_a_bias():
    # head 0: a0 b0 a1 b1 -> a0 a1 b0 b1; head 1 likewise, never mixed with head 0
    bias = torch.tensor([0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0])
    assert un_permute(bias, 2).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_un_permute_inverts_llama_cpp_permutation():
    w = torch.randn(3 * 8, 5)  # 3 heads of width 8
    assert torch.equal(un_permute(torch.from_numpy(permute(w.numpy(), 3)), 3), w)


# ---- config ---------------------------------------------------------------------------------------------------
def test_config_comes_from_metadata(files):
    path, _ = files["llama", True]
    config = hf_config(read_gguf(path))
    assert config == {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(train_vocab()[0]),
        "hidden_size": SHAPE["hidden"], "intermediate_size": SHAPE["ffn"], "num_hidden_layers": SHAPE["layers"],
        "num_attention_heads": SHAPE["heads"], "num_key_value_heads": SHAPE["kv_heads"],
        "head_dim": SHAPE["head_dim"], "hidden_act": "silu", "rms_norm_eps": float(np.float32(1e-5)),
        "rope_theta": 100000.0, "rope_scaling": None, "max_position_embeddings": 256, "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
        "torch_dtype": "float32"}
    assert hf_config(read_gguf(files["llama", False][0]))["tie_word_embeddings"] is False


# ---- weights and logits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [("llama", True), ("llama", False), ("qwen3", True)], ids=str)
def test_loaded_weights_are_the_dequantized_hf_tensors(files, key):
    path, expected = files[key]
    lm = load_causal_lm(path)
    state = lm.state_dict()
    if key[1]:
        assert lm.lm_head.weight is lm.model.embed_tokens.weight
        expected = {**expected, "lm_head.weight": expected["model.embed_tokens.weight"]}
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.parametrize("tied", [True, False])
def test_llama_logits_match_transformers_gguf_reading(files, tied, record_max_diff):
    path, _ = files["llama", tied]
    ours = load_causal_lm(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                               dtype=torch.float32).eval()
    ids = _ids()
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits).abs().max().item()
    record_max_diff("gguf tiny llama logits (vs transformers gguf)", diff)
    assert diff <= TOL


def test_qwen3_logits_match_transformers_on_the_converted_folder(files, tmp_path, record_max_diff):
    # transformers 5 reads a Qwen3 GGUF with its class default head_dim (128) whatever the file says, so the
    # tiny Qwen3 (head_dim 16) is compared through the Hugging Face folder instead
    path, _ = files["qwen3", True]
    out = convert_gguf(path, tmp_path / "qwen3")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = _ids()
    with torch.no_grad():
        diff = (load_causal_lm(path)(ids) - theirs(ids).logits).abs().max().item()
    record_max_diff("gguf tiny qwen3 logits (vs transformers folder)", diff)
    assert diff <= TOL


def test_dtype_argument_casts_the_dequantized_weights(files):
    lm = load_causal_lm(files["llama", True][0], dtype="bfloat16")
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}


# ---- convert_gguf ---------------------------------------------------------------------------------------------
def test_converted_folder_loads_in_minigrpo_and_transformers(files, tmp_path, record_max_diff):
    path, _ = files["llama", False]
    out = convert_gguf(path, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                     "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2,
                                                                       "pad_token_id": 2}
    ids = _ids()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        reference = load_causal_lm(path)(ids)
        from_folder = load_causal_lm(out)(ids)
        diff = (theirs(ids).logits - reference).abs().max().item()
    assert torch.equal(from_folder, reference)
    record_max_diff("gguf tiny llama logits (transformers on converted folder)", diff)
    assert diff <= TOL

    ours, hf_tok = load_tokenizer(out), transformers.AutoTokenizer.from_pretrained(out)
    direct = load_tokenizer(path)
    for text in TEXTS:
        assert ours.encode(text) == hf_tok(text).input_ids == direct.encode(text), text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]
    assert ours.apply_chat_template(messages, add_generation_prompt=True) == \
        hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# ---- errors ---------------------------------------------------------------------------------------------------
def test_unknown_architecture_is_named(tmp_path):
    path = tmp_path / "falcon.gguf"
    write_tiny_gguf(path, arch="falcon")
    with pytest.raises(ValueError, match=r"unsupported architecture 'falcon'.*expected one of \['llama', 'qwen3'\]"):
        load_causal_lm(path)
    with pytest.raises(ValueError, match="unsupported architecture 'falcon'"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_tensor_type_is_named_before_loading(tmp_path):
    path = tmp_path / "q5.gguf"
    write_tiny_gguf(path, types={"blk.0.attn_q.weight": Q.Q5_0, "blk.1.ffn_down.weight": Q.Q5_1})
    with pytest.raises(ValueError, match=r"unsupported tensor types: 'blk.0.attn_q.weight' \(Q5_0\), "
                                         r"'blk.1.ffn_down.weight' \(Q5_1\); supported: F32, F16, BF16"):
        load_causal_lm(path)


def test_llama3_rope_factors_are_refused(tmp_path):
    path = tmp_path / "rope.gguf"
    write_tiny_gguf(path, extra={"rope_freqs.weight": np.ones(SHAPE["head_dim"] // 2, dtype=np.float32)})
    with pytest.raises(ValueError, match="'rope_freqs.weight' .*not supported"):
        load_causal_lm(path)


def test_tensor_without_hf_counterpart_is_named(tmp_path):
    path = tmp_path / "extra.gguf"
    write_tiny_gguf(path, extra={"blk.0.attn_sinks.weight": np.ones(4, dtype=np.float32)})
    with pytest.raises(ValueError, match=r"without a Hugging Face counterpart .*\['blk.0.attn_sinks.weight'\]"):
        load_causal_lm(path)
