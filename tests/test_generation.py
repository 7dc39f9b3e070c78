from types import SimpleNamespace

import pytest
import torch
from torch import nn

from minigrpo.generation import GenerationOutput, KVCache, generate, repeat_prompts
from minigrpo.generation.prompts import position_ids

VOCAB = 16


class CountingLM(nn.Module):
    """A stand-in CausalLM whose greedy continuation of token x is x + 1 (mod VOCAB), whatever came before.

    It follows the model contract (writes one layer of the cache, advances it once per forward) and records
    every call, so tests can check what `generate` feeds the model.
    """

    def __init__(self, max_positions=64):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=1, num_key_value_heads=1, head_dim=1,
                                      max_position_embeddings=max_positions)
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(VOCAB, 1)  # unused; gives generate() a device and a dtype
        self.lm_head = nn.Identity()
        self.calls = []

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None):
        self.calls.append(dict(input_ids=input_ids.clone(), position_ids=position_ids.clone(),
                               attention_mask=None if attention_mask is None else attention_mask.clone(),
                               seen=kv_cache.seen, cache_storage=kv_cache.keys.data_ptr(),
                               cache_slots=kv_cache.max_length))
        b, t = input_ids.shape
        kv_cache.update(0, input_ids[:, None, :, None].float(), input_ids[:, None, :, None].float())
        kv_cache.advance(t)
        return 10.0 * nn.functional.one_hot((input_ids + 1) % VOCAB, VOCAB).float()  # (B, T, V)


def left_padded(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


# ---------------------------------------------------------------- prompts

def test_repeat_prompts_is_prompt_major():
    ids, mask = left_padded([[5, 6], [7]])
    rep_ids, rep_mask = repeat_prompts(ids, mask, 3)
    assert rep_ids.tolist() == [[5, 6]] * 3 + [[0, 7]] * 3
    assert rep_mask.tolist() == [[1, 1]] * 3 + [[0, 1]] * 3


def test_position_ids_count_real_tokens_and_put_pads_at_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


def test_decoding_feeds_one_token_per_step_with_next_positions_and_a_growing_mask():
    lm = CountingLM()
    ids, mask = left_padded([[1, 2, 3], [4]])
    out = generate(lm, ids, mask, max_new_tokens=3, temperature=0.0)
    assert out.completion_ids.tolist() == [[4, 5, 6], [5, 6, 7]]
    prefill, *steps = lm.calls
    assert prefill["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]] and prefill["seen"] == 0
    assert len(steps) == 2  # the last token is sampled, never fed back
    # one cache, allocated once for P + N slots and written in place: no per-step concatenation
    assert {(c["cache_storage"], c["cache_slots"]) for c in lm.calls} == {(prefill["cache_storage"], 3 + 3)}
    for t, call in enumerate(steps):
        assert call["input_ids"].shape == (2, 1) and call["seen"] == 3 + t
        assert call["position_ids"].tolist() == [[3 + t], [1 + t]]
        assert call["attention_mask"].tolist() == [[1, 1, 1] + [1] * (t + 1), [0, 0, 1] + [1] * (t + 1)]


def test_unpadded_batch_passes_no_mask():
    lm = CountingLM()
    generate(lm, torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2, dtype=torch.long), max_new_tokens=3,
             temperature=0.0)
    assert all(call["attention_mask"] is None for call in lm.calls)


# ---------------------------------------------------------------- stopping

def test_each_row_stops_at_its_first_eos_which_stays_in_the_mask():
    lm = CountingLM()
    ids, mask = left_padded([[3], [6], [1]])  # greedy: 4 5 6 7 8 ..., 7 8 9 ..., 2 3 4 5 6 7 ...
    out = generate(lm, ids, mask, max_new_tokens=8, temperature=0.0, eos_token_id=7, pad_token_id=15)
    assert isinstance(out, GenerationOutput)
    assert out.completion_ids.tolist() == [[4, 5, 6, 7, 15, 15], [7, 15, 15, 15, 15, 15], [2, 3, 4, 5, 6, 7]]
    assert out.completion_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_several_eos_ids_each_stop_a_row():
    lm = CountingLM()
    ids, mask = left_padded([[1], [8]])
    out = generate(lm, ids, mask, max_new_tokens=10, temperature=0.0, eos_token_id=(3, 10))
    assert out.completion_ids.tolist() == [[2, 3], [9, 10]]
    assert out.completion_mask.tolist() == [[1, 1], [1, 1]]


def test_loop_ends_as_soon_as_every_row_has_stopped():
    lm = CountingLM()
    ids, mask = left_padded([[1], [2]])
    out = generate(lm, ids, mask, max_new_tokens=20, temperature=0.0, eos_token_id=[4])
    assert out.completion_ids.shape == (2, 3)
    assert len(lm.calls) == 3  # prefill + 2 steps: the step after the last EOS is never run


def test_max_new_tokens_is_respected_when_no_row_stops():
    for eos in (None, 99):
        out = generate(CountingLM(), *left_padded([[1], [2, 3]]), max_new_tokens=5, temperature=0.0,
                       eos_token_id=eos)
        assert out.completion_ids.shape == (2, 5) and out.completion_mask.sum() == 10


# ---------------------------------------------------------------- side conditions

def test_model_mode_is_left_unchanged_and_outputs_work_in_autograd():
    lm = CountingLM().train()
    out = generate(lm, *left_padded([[1, 2]]), max_new_tokens=3)
    assert lm.training
    weights = torch.randn(1, 3, VOCAB, requires_grad=True)
    weights.gather(-1, out.completion_ids[..., None]).sum().backward()  # would fail on inference tensors
    assert weights.grad.sum() == 3


@pytest.mark.parametrize("ids, mask, max_new, match", [
    (torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), 4, "empty batch"),
    (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), 4, "same|\\(B, P\\)"),
    (torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [1, 1, 1]]), 4, "rows \\[0\\]"),
    (torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [1, 0, 1]]), 4, "not left-padded"),
    (torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [0, 0, 0]]), 4, "at least one real"),
    (torch.ones(1, 60, dtype=torch.long), torch.ones(1, 60, dtype=torch.long), 5, "exceeds the model's context"),
    (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), 0, "max_new_tokens"),
])
def test_bad_prompts_raise_a_clear_error(ids, mask, max_new, match):
    with pytest.raises(ValueError, match=match):
        generate(CountingLM(max_positions=64), ids, mask, max_new_tokens=max_new)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-0.5), "temperature"), (dict(top_k=2.5), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(eos_token_id=[]), "eos_token_id"), (dict(eos_token_id="</s>"), "eos_token_id"),
])
def test_bad_sampling_arguments_raise_before_any_forward(kwargs, match):
    lm = CountingLM()
    with pytest.raises(ValueError, match=match):
        generate(lm, *left_padded([[1, 2]]), max_new_tokens=3, **kwargs)
    assert lm.calls == []


def test_eos_ids_may_be_a_tensor_or_a_set():
    for eos in (torch.tensor([4, 9]), {4, 9}):
        out = generate(CountingLM(), *left_padded([[1], [6]]), max_new_tokens=10, temperature=0.0, eos_token_id=eos)
        assert out.completion_ids.tolist() == [[2, 3, 4], [7, 8, 9]]


def test_context_check_counts_real_tokens_not_padding():
    ids, mask = left_padded([[0] * 50 + [1] * 10, [0] * 59 + [2]])
    mask[:, :50] = 0  # 60 columns, at most 10 real tokens
    out = generate(CountingLM(max_positions=64), ids, mask, max_new_tokens=54, temperature=0.0)  # 10 + 54 = 64
    assert out.completion_ids.shape == (2, 54)


def test_kv_cache_is_reexported_and_states_its_layout():
    import minigrpo.models.kv_cache as kv_cache_module
    assert KVCache is kv_cache_module.KVCache and "(L, B, Hkv, S_max, D)" in kv_cache_module.__doc__


# ---------------------------------------------------------------- real models: oracle and parity with transformers

def make_tiny_pair(arch, out_dir):
    """A random transformers model and the same weights loaded by minigrpo, both fp32, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from minigrpo.models import load_causal_lm

    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    if arch == "llama":
        hf = LlamaForCausalLM(LlamaConfig(**common))
    else:
        hf = Qwen3ForCausalLM(Qwen3Config(head_dim=32, **common))  # head_dim != hidden / heads, q/k norms
    hf.save_pretrained(out_dir)
    return hf.eval(), load_causal_lm(out_dir).eval()


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def tiny_pair(request, tmp_path_factory):
    return make_tiny_pair(request.param, tmp_path_factory.mktemp(request.param))


def padded_prompts():
    """Three prompts of 7, 4 and 2 real tokens, left-padded with 0 to a width of 7."""
    ids = torch.randint(3, 96, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


def recompute_logits(model, prompt_ids, prompt_mask, completion_ids):
    """The slow, obvious path: at every step t, run the whole sequence prompt + completion[:t] through the model
    without any cache and keep the last position's logits. Returns (B, N, V)."""
    steps = []
    with torch.no_grad():
        for t in range(completion_ids.shape[1]):
            ids = torch.cat([prompt_ids, completion_ids[:, :t]], dim=1)  # (B, P + t)
            mask = torch.cat([prompt_mask, torch.ones_like(completion_ids[:, :t])], dim=1)
            steps.append(model(ids, attention_mask=mask, position_ids=position_ids(mask))[:, -1])
    return torch.stack(steps, dim=1)


def test_kv_cache_decoding_equals_recomputing_the_whole_sequence(tiny_pair):
    _, lm = tiny_pair
    cached = []  # the logits generate() samples from, one (B, V) per step
    hook = lm.lm_head.register_forward_hook(lambda module, args, out: cached.append(out.clone()))
    try:
        ids, mask = padded_prompts()
        out = generate(lm, ids, mask, max_new_tokens=10, temperature=1.0, top_k=20,
                       generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    expected = recompute_logits(lm, ids, mask, out.completion_ids)
    assert torch.stack(cached, dim=1).shape == expected.shape == (3, 10, 96)
    assert (torch.stack(cached, dim=1) - expected).abs().max() < 1e-5


def test_greedy_is_token_identical_to_transformers_generate(tiny_pair):
    hf, lm = tiny_pair
    ids, mask = padded_prompts()
    theirs = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=0,
                         eos_token_id=None)
    ours = generate(lm, ids, mask, max_new_tokens=12, temperature=0.0)
    assert torch.equal(ours.completion_ids, theirs[:, ids.shape[1]:])


def test_greedy_with_several_eos_ids_stops_like_transformers_generate(tiny_pair):
    hf, lm = tiny_pair
    ids, mask = padded_prompts()
    free = generate(lm, ids, mask, max_new_tokens=12, temperature=0.0).completion_ids
    eos = [int(free[0, 2]), int(free[2, 4])]  # tokens the greedy rows do emit, so rows stop at different steps
    theirs = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=0,
                         eos_token_id=eos)
    ours = generate(lm, ids, mask, max_new_tokens=12, temperature=0.0, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(ours.completion_ids, theirs[:, ids.shape[1]:])
    # mask: 1 up to and including each row's first EOS in the unstopped greedy run
    is_eos = torch.isin(free, torch.tensor(eos))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), free.shape[1])  # (B,)
    expected = (torch.arange(free.shape[1]) <= first[:, None]).long()[:, :ours.completion_mask.shape[1]]
    assert torch.equal(ours.completion_mask, expected)
    assert ours.completion_ids.shape[1] == min(int(first.max()) + 1, 12)  # stops once the last row has stopped


def test_seeded_generate_is_reproducible(tiny_pair):
    _, lm = tiny_pair
    ids, mask = padded_prompts()
    run = lambda seed: generate(lm, ids, mask, max_new_tokens=8, top_k=30, top_p=0.9,  # noqa: E731
                                generator=torch.Generator().manual_seed(seed)).completion_ids
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_bf16_model_decodes_into_a_bf16_cache(tmp_path, monkeypatch):
    from minigrpo.models import load_causal_lm

    make_tiny_pair("llama", tmp_path)
    lm = load_causal_lm(tmp_path, dtype=torch.bfloat16).eval()
    cache_dtypes, for_model = [], KVCache.for_model
    monkeypatch.setattr(KVCache, "for_model", classmethod(
        lambda cls, *args, **kwargs: cache_dtypes.append(kwargs["dtype"]) or for_model(*args, **kwargs)))
    out = generate(lm, *padded_prompts(), max_new_tokens=4, temperature=0.0)
    assert cache_dtypes == [torch.bfloat16]
    assert out.completion_ids.shape == (3, 4) and out.completion_ids.dtype == torch.long


def test_a_row_seeded_sample_does_not_depend_on_the_other_rows(tiny_pair):
    _, lm = tiny_pair
    ids, mask = padded_prompts()  # three prompts of 7, 4 and 2 real tokens
    kw = dict(max_new_tokens=8, temperature=1.0, top_k=30)
    batch = generate(lm, ids, mask, row_seeds=[11, 22, 33], **kw).completion_ids  # (3, N)
    # row 1 alone (its prompt unpadded), and beside other rows with other seeds
    alone = generate(lm, ids[1:2, 3:], mask[1:2, 3:], row_seeds=[22], **kw).completion_ids
    shuffled = generate(lm, ids[[2, 1, 0]], mask[[2, 1, 0]], row_seeds=[5, 22, 6], **kw).completion_ids
    assert batch.shape == (3, 8) and alone.shape == (1, 8)  # no eos_token_id: every row runs to the end
    assert torch.equal(batch[1], alone[0]) and torch.equal(batch[1], shuffled[1])
    assert not torch.equal(batch[0], batch[1])  # seeds differ, samples differ
    with pytest.raises(ValueError, match="one seed per prompt row"):
        generate(lm, ids, mask, row_seeds=[1, 2], **kw)
    with pytest.raises(ValueError, match="either one generator"):
        generate(lm, ids, mask, row_seeds=[1, 2, 3], generator=torch.Generator().manual_seed(0), **kw)
