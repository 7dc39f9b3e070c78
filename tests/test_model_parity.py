"""Parity with transformers on tiny random checkpoints that transformers itself saved.

Left-padded batches; transformers' plain forward uses arange positions, as ours does by default, and both get the
same attention mask; only real positions are compared (what a pad position computes is not specified).
Tolerances: fp32 1e-5 absolute. bf16 vs bf16: 4 bf16 ulps of the largest logit (4 * 2^-8 * max|logit|), room for
the two implementations to round intermediate products in different orders (on torch 2.13 CPU they agree exactly).
"""

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigrpo.models import KVCache, load_body, load_causal_lm

transformers = pytest.importorskip("transformers")


def _max_diff_real(a, b, mask):
    return (a.float() - b.float())[mask.bool()].abs().max().item()


@torch.no_grad()
def test_llama_logits_match_transformers_llama3_rope_gqa_untied(llama_checkpoint, batch, record_max_diff):
    path, hf = llama_checkpoint
    ids, mask = batch
    lm = load_causal_lm(path)
    assert lm.config.rope_scaling["rope_type"] == "llama3" and lm.config.num_key_value_heads == 2
    assert lm.lm_head.weight is not lm.model.embed_tokens.weight
    diff = _max_diff_real(lm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits, mask)
    record_max_diff("llama logits fp32 (left-padded)", diff)
    assert diff <= 1e-5
    # no mask at all: the is_causal fast path
    diff = (lm(ids) - hf(input_ids=ids).logits).abs().max().item()
    record_max_diff("llama logits fp32 (no padding)", diff)
    assert diff <= 1e-5


@torch.no_grad()
def test_llama_hidden_states_match_transformers_last_hidden_state(llama_checkpoint, batch, record_max_diff):
    path, hf = llama_checkpoint
    ids, mask = batch
    h = load_causal_lm(path).hidden_states(ids, mask)
    ref = hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
    diff = _max_diff_real(h, ref, mask)
    record_max_diff("llama hidden states fp32", diff)
    assert diff <= 1e-5


@torch.no_grad()
def test_sharded_tied_qwen3_logits_match_transformers(qwen3_checkpoint, batch, record_max_diff):
    path, hf = qwen3_checkpoint
    assert (path / "model.safetensors.index.json").exists() and len(list(path.glob("model-*.safetensors"))) > 1
    ids, mask = batch
    lm = load_causal_lm(path)
    assert lm.config.head_dim == 32 != lm.config.hidden_size // lm.config.num_attention_heads
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    diff = _max_diff_real(lm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits, mask)
    record_max_diff("qwen3 logits fp32 (sharded, tied)", diff)
    assert diff <= 1e-5


@torch.no_grad()
def test_prefixless_qwen3_body_hidden_states_match_transformers(qwen3_body_checkpoint, batch, record_max_diff):
    path, hf = qwen3_body_checkpoint
    ids, mask = batch
    diff = _max_diff_real(load_body(path)(ids, mask), hf(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
    record_max_diff("qwen3 body hidden states fp32 (prefix-less)", diff)
    assert diff <= 1e-5


@torch.no_grad()
def test_bf16_checkpoint_loads_in_bf16_and_matches_transformers_bf16(tmp_path, hf_llama_config, batch,
                                                                      record_max_diff):
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(hf_llama_config).to(torch.bfloat16).eval()
    hf.save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    lm = load_causal_lm(tmp_path)  # dtype=None: the config's bfloat16
    assert lm.lm_head.weight.dtype == torch.bfloat16
    assert lm.model.rotary_emb.inv_freq.dtype == torch.float32
    ids, mask = batch
    ours, ref = lm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits
    assert ours.dtype == ref.dtype == torch.bfloat16
    diff = _max_diff_real(ours, ref, mask)
    record_max_diff("llama logits bf16 vs bf16", diff)
    assert diff <= 4 * 2**-8 * ref.float().abs().max().item()
    # the same file read as fp32 matches transformers in fp32
    hf32 = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    diff = _max_diff_real(load_causal_lm(tmp_path, dtype=torch.float32)(ids, mask),
                          hf32(input_ids=ids, attention_mask=mask).logits, mask)
    record_max_diff("llama logits bf16 file read as fp32", diff)
    assert diff <= 1e-5


def _store_lm_head(path, weight):
    """Add lm_head.weight to a single-file tied checkpoint, as Qwen3-0.6B's file has it."""
    state = load_file(path / "model.safetensors")
    state["lm_head.weight"] = weight.contiguous()
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


@torch.no_grad()
def test_tied_checkpoint_that_also_stores_lm_head_keeps_embed_tokens(tmp_path, hf_qwen3_config, batch,
                                                                     record_max_diff):
    torch.manual_seed(4)
    hf = transformers.Qwen3ForCausalLM(hf_qwen3_config).eval()
    hf.save_pretrained(tmp_path)
    _store_lm_head(tmp_path, hf.model.embed_tokens.weight.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical stored copy: no warning
        lm = load_causal_lm(tmp_path)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    ids, mask = batch
    diff = _max_diff_real(lm(ids, mask), hf(input_ids=ids, attention_mask=mask).logits, mask)
    record_max_diff("qwen3 logits fp32 (tied, lm_head stored too)", diff)
    assert diff <= 1e-5

    _store_lm_head(tmp_path, torch.zeros_like(hf.model.embed_tokens.weight))  # a stored head that differs
    with pytest.warns(UserWarning, match="differs from embed_tokens.weight"):
        lm = load_causal_lm(tmp_path)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert torch.equal(lm.lm_head.weight, hf.model.embed_tokens.weight)


@torch.no_grad()
@pytest.mark.parametrize("which", ["llama", "qwen3"])
def test_cached_decoding_equals_full_recompute_on_left_padded_rows(which, llama_checkpoint, qwen3_checkpoint, batch):
    path = (llama_checkpoint if which == "llama" else qwen3_checkpoint)[0]
    lm = load_causal_lm(path)
    ids, mask = batch
    full = lm(ids, mask)  # (B, T, V)
    cache = KVCache.for_model(lm.config, ids.shape[0], ids.shape[1], dtype=torch.float32, device="cpu")
    prompt = 5
    steps = [lm(ids[:, :prompt], mask[:, :prompt], kv_cache=cache)]  # prefill
    for t in range(prompt, ids.shape[1]):  # then one token at a time
        steps.append(lm(ids[:, t:t + 1], mask[:, :t + 1], kv_cache=cache))
    assert cache.seen == ids.shape[1]
    assert _max_diff_real(torch.cat(steps, dim=1), full, mask) <= 1e-5


@torch.no_grad()
def test_cached_decoding_without_mask_equals_full_recompute(llama_checkpoint, batch):
    lm = load_causal_lm(llama_checkpoint[0])
    ids, _ = batch
    cache = KVCache.for_model(lm.config, 3, 9, dtype=torch.float32, device="cpu")
    steps = [lm(ids[:, :4], kv_cache=cache), lm(ids[:, 4:6], kv_cache=cache)]  # multi-token step with a past
    steps += [lm(ids[:, t:t + 1], kv_cache=cache) for t in range(6, 9)]
    assert (torch.cat(steps, dim=1) - lm(ids)).abs().max().item() <= 1e-5


@torch.no_grad()
def test_explicit_position_ids_shift_does_not_change_real_logits_beyond_rounding(llama_checkpoint, batch):
    """generate()-style positions (cumsum(mask) - 1) vs arange: RoPE sees only differences, so the same logits."""
    lm = load_causal_lm(llama_checkpoint[0])
    ids, mask = batch
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    assert _max_diff_real(lm(ids, mask, position_ids=positions), lm(ids, mask), mask) <= 1e-4


def test_model_cast_to_bf16_keeps_rope_frequencies_fp32(llama_checkpoint):
    lm = load_causal_lm(llama_checkpoint[0])
    before = lm.model.rotary_emb.inv_freq.clone()
    lm.to(torch.bfloat16)
    assert lm.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.equal(lm.model.rotary_emb.inv_freq, before)


def test_gradient_checkpointing_gives_the_same_gradients(llama_checkpoint, batch):
    ids, mask = batch
    grads = []
    for checkpointing in (False, True):
        lm = load_causal_lm(llama_checkpoint[0]).train()
        lm.model.gradient_checkpointing = checkpointing
        lm(ids, mask)[mask.bool()].logsumexp(-1).sum().backward()
        grads.append(lm.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=0)
