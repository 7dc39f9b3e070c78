"""GRPOTrainer end to end (minigrpo/grpo/trainer.py, lifecycle.py, microbatch.py, rollout.py, logprobs.py) on a
tiny random Llama."""

import dataclasses
import json
import math

import pytest
import torch

from minigrpo.grpo import microbatch as microbatch_module
from minigrpo.grpo import trainer as trainer_module
from minigrpo.grpo.checkpoint import latest_checkpoint, load_checkpoint
from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.metrics import TIMING_KEYS, read_metrics
from minigrpo.grpo.logprobs import completion_logprobs
from minigrpo.grpo.microbatch import accumulate_gradients, micro_batches
from minigrpo.grpo.rollout import rollout, should_merge
from minigrpo.grpo.lifecycle import TrainingStopped
from minigrpo.grpo.trainer import GRPOTrainer
from minigrpo.lora import lora_layers, lora_parameters
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer

PROMPTS = ["the cat sat", "hello", "one two three four five", "a"]  # unequal lengths: left padding is exercised


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama")
    make_tiny_checkpoint(path, arch="llama", seed=0)
    return path


def noise_reward(completions, items):
    """A deterministic function of the text with spread inside every group, so advantages are never all 0."""
    return torch.tensor([(sum(map(ord, c)) % 97) / 97 for c in completions])


def letter_reward(completions, items):
    """Fraction of characters that are 'e' (the toy task)."""
    return torch.tensor([c.count("e") / len(c) if c else 0.0 for c in completions])


def make_config(tmp_path, **overrides):
    base = dict(prompts_per_step=2, num_generations=3, max_prompt_length=16, max_completion_length=6, max_steps=2,
                learning_rate=1e-2, warmup_steps=0, lr_schedule="constant", lora_r=4, lora_alpha=8.0, device="cpu",
                run_dir=str(tmp_path / "run"), progress=False, save_interval=0, sample_interval=1, num_samples=2)
    base.update(overrides)
    return GRPOConfig(**base)


def make_trainer(tiny, tmp_path, rewards=None, **overrides):
    policy, tok = load_causal_lm(tiny), load_tokenizer(tiny)
    return GRPOTrainer(policy, tok, rewards or {"noise": noise_reward}, PROMPTS, lambda p: p,
                       make_config(tmp_path, **overrides))


def sample(t, seed=1):
    return rollout(t.policy, t.tokenizer, PROMPTS[:t.config.prompts_per_step], lambda p: p, t.config,
                   generator=torch.Generator().manual_seed(seed))


def slices(t, batch):
    return micro_batches(len(batch), t.config.gradient_accumulation_steps)


def unpadded_logprobs(model, b, i, temperature):
    """Row i's completion log-probs computed alone: real tokens only (no pads, default positions 0..n-1), full
    logits, a float64 log_softmax. Independent of completion_logprobs' padding, position ids and chunking."""
    prompt = b.prompt_ids[i][b.prompt_mask[i].bool()]
    n = int(b.completion_mask[i].sum())
    ids = torch.cat([prompt, b.completion_ids[i, :n]])[None]  # (1, P + n)
    logits = model(ids)[0, len(prompt) - 1:-1].double()  # (n, V): position P - 1 + t predicts completion token t
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, b.completion_ids[i, :n, None])[:, 0]


def randomize_adapters(t, std=0.05):
    torch.manual_seed(123)
    with torch.no_grad():
        for p in lora_parameters(t.policy):
            p.normal_(0.0, std)


def test_a_step_changes_only_lora_weights_and_logs_every_metric(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, max_steps=1)
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    [row] = t.train()
    for name, p in t.policy.named_parameters():
        if "lora_B" in name:
            assert not torch.equal(p, before[name]), f"{name} did not move"
        elif "lora_A" not in name:  # A gets no gradient while B = 0; everything else is frozen
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    for key in ("loss", "reward", "reward_std", "rewards/noise/mean", "rewards/noise/std", "frac_reward_zero_std",
                "kl", "clip_ratio/region_mean", "entropy", "completion_length/mean", "completion_length/min",
                "completion_length/max", "completion_length/frac_truncated", "grad_norm", "learning_rate",
                "tokens_per_second", "step_time"):
        assert key in row and row[key] is not None and math.isfinite(row[key]), key
    assert row["world_size"] == 1
    assert row["hacking/noise/mean"] == row["rewards/noise/mean"] and "hacking/len_reward_corr" in row
    assert row["hacking/copy_question_frac"] is None  # the items are plain prompts, without a question
    assert read_metrics(t.config.run_dir) == [json.loads(json.dumps(row))]
    samples = [json.loads(line) for line in open(tmp_path / "run" / "samples.jsonl")]
    assert len(samples) == 2 and set(samples[0]["rewards"]) == {"noise"}
    assert latest_checkpoint(t.config.run_dir).name == "step-000001"  # always saved at the end


def test_reference_and_old_logprobs_are_the_base_and_current_models_at_the_sampling_temperature(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, beta=0.04, temperature=0.7)
    randomize_adapters(t)  # the policy now differs from the base model
    batch = sample(t)
    [ref] = t.reference_logprobs(batch, slices(t, batch))
    [old] = t.old_logprobs(batch, slices(t, batch))
    base = load_causal_lm(tiny)  # the checkpoint without any adapter
    with torch.no_grad():
        for i in range(len(batch)):
            n = int(batch.completion_mask[i].sum())
            torch.testing.assert_close(ref[i, :n], unpadded_logprobs(base, batch, i, 0.7).float(), rtol=0, atol=2e-5)
            torch.testing.assert_close(old[i, :n], unpadded_logprobs(t.policy, batch, i, 0.7).float(), rtol=0,
                                       atol=2e-5)
    m = batch.completion_mask[:, :ref.shape[1]].bool()
    assert (old[m] - ref[m]).abs().max() > 1e-3  # the test would notice adapters left on


def test_first_update_has_ratio_one_and_fresh_adapters_have_zero_kl_at_any_temperature(tiny, tmp_path):
    # old and reference log-probs must use the sampling temperature, as the update's log-probs do: with mu = 2
    # the first update's ratio is exactly 1, and with B = 0 (fresh adapters) the policy is the reference, KL 0
    t = make_trainer(tiny, tmp_path, max_steps=1, num_iterations=2, beta=0.04, temperature=0.6)
    t.train()
    first = t.update_stats[0]
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and first["clip_ratio/region_mean"] == 0.0
    assert abs(first["kl"]) < 1e-7


def test_mu_above_one_has_ratio_one_first_then_clips(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, max_steps=1, num_iterations=3, beta=0.0, learning_rate=5e-2, eps_low=0.02,
                     eps_high=0.02)
    [row] = t.train()
    first, *later = t.update_stats
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert first["clip_ratio/region_mean"] == 0.0
    assert max(u["clip_ratio/region_mean"] for u in later) > 0.0
    assert len(row["updates"]) == 3 and row["kl"] is None  # beta = 0: no reference forward, no KL


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gradient_accumulation_equals_the_full_batch(tiny, tmp_path, loss_type):
    t = make_trainer(tiny, tmp_path, loss_type=loss_type, beta=0.04, prompts_per_step=2, num_generations=3)
    randomize_adapters(t)
    batch = sample(t)
    n = batch.completion_mask.shape[1]
    for i in range(len(batch)):  # unequal lengths, so token- and row-weighted means differ
        batch.completion_mask[i, 1 + i % n:] = 0
    advantages = torch.linspace(-1.0, 1.5, len(batch))
    results = []
    for n in (1, 3, 6):
        t.config = dataclasses.replace(t.config, gradient_accumulation_steps=n)
        t.optimizer.zero_grad(set_to_none=True)
        mb = slices(t, batch)
        stats = accumulate_gradients(t.policy, batch, advantages, mb, t.config, t.reference_logprobs(batch, mb))
        results.append((stats, [p.grad.clone() for p in t.params]))
    (full, full_grads), *accumulated = results
    assert any(g.abs().max() > 0 for g in full_grads)
    for stats, grads in accumulated:
        assert stats["loss"] == pytest.approx(full["loss"], rel=1e-5, abs=1e-7)
        assert stats["kl"] == pytest.approx(full["kl"], rel=1e-5, abs=1e-7)
        for a, b in zip(grads, full_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_merging_for_generation_restores_the_base_weights_exactly(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, merge_for_generation=True)
    randomize_adapters(t)
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    unmerged = sample(t.__class__(t.policy, t.tokenizer, t.reward_fns, PROMPTS, lambda p: p,
                                   dataclasses.replace(t.config, merge_for_generation=False)))
    merged = sample(t)
    for n, p in t.policy.named_parameters():
        assert torch.equal(p, before[n]), n
    assert not any(m.merged for _, m in lora_layers(t.policy))
    assert merged.completion_ids.shape == unmerged.completion_ids.shape
    assert (merged.completion_ids == unmerged.completion_ids).float().mean() > 0.9  # same policy up to rounding


def test_auto_merge_is_on_for_float32_base_weights_only(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path)
    assert t.config.merge_for_generation is None and should_merge(t.policy, t.config)
    assert not should_merge(t.policy, dataclasses.replace(t.config, merge_for_generation=False))
    layer = lora_layers(t.policy)[0][1]
    layer.base_layer.weight.data = layer.base_layer.weight.data.to(torch.bfloat16)  # one bf16 weight is enough
    assert not should_merge(t.policy, t.config)
    assert should_merge(t.policy, dataclasses.replace(t.config, merge_for_generation=True))


def test_chunked_and_plain_logprobs_match_each_row_scored_alone(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, temperature=0.7)
    randomize_adapters(t)
    b = sample(t)
    args = (t.policy, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask)
    with torch.no_grad():
        fast, fast_h = completion_logprobs(*args, temperature=0.7, chunk_size=5, with_entropy=True)
        plain, plain_h = completion_logprobs(*args, temperature=0.7, chunk_size=0, with_entropy=True)
        for i in range(len(b)):
            n = int(b.completion_mask[i].sum())
            expected = unpadded_logprobs(t.policy, b, i, temperature=0.7).float()
            torch.testing.assert_close(fast[i, :n], expected, rtol=0, atol=2e-5)
            torch.testing.assert_close(plain[i, :n], expected, rtol=0, atol=2e-5)
            wrong_tau = unpadded_logprobs(t.policy, b, i, temperature=1.0).float()
            assert (fast[i, :n] - wrong_tau).abs().max() > 1e-3  # the comparison can tell temperatures apart
    torch.testing.assert_close(fast_h, plain_h, rtol=0, atol=1e-5)


def test_logprobs_follow_an_adapter_on_the_output_head(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, lora_targets=("q_proj", "lm_head"))
    randomize_adapters(t)
    b = sample(t)
    with torch.no_grad():
        fast, _ = completion_logprobs(t.policy, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask)
        ids = torch.cat([b.prompt_ids, b.completion_ids], dim=1)
        mask = torch.cat([b.prompt_mask, b.completion_mask], dim=1)
        logits = t.policy(ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))  # (B, T, V)
        Tp = b.prompt_ids.shape[1]
        plain = torch.log_softmax(logits[:, Tp - 1:-1].float(), dim=-1).gather(-1, b.completion_ids[..., None])[..., 0]
    m = b.completion_mask.bool()
    torch.testing.assert_close(fast[m], plain[m], rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny, tmp_path):
    grads = []
    for gc in (False, True):
        t = make_trainer(tiny, tmp_path / str(gc), gradient_checkpointing=gc, beta=0.04)
        randomize_adapters(t)
        batch = sample(t)
        mb = slices(t, batch)
        accumulate_gradients(t.policy, batch, torch.linspace(-1.0, 1.0, len(batch)), mb, t.config,
                             t.reference_logprobs(batch, mb))
        grads.append([p.grad.clone() for p in t.params])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


class Crash(BaseException):
    """Stands for the process dying (SIGKILL, power cut): not an Exception, so nothing catches it."""


def test_resume_reproduces_the_uninterrupted_metrics(tiny, tmp_path):
    kw = dict(max_steps=4, save_interval=2, beta=0.04, num_iterations=2, gradient_accumulation_steps=3)
    straight = make_trainer(tiny, tmp_path / "a", **kw).train()

    calls = {"n": 0}

    def dies_during_step_4(completions, items):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash()
        return noise_reward(completions, items)

    with pytest.raises(Crash):
        make_trainer(tiny, tmp_path / "b", rewards={"noise": dies_during_step_4}, **kw).train()
    run_b = tmp_path / "b" / "run"
    assert [r["step"] for r in read_metrics(run_b)] == [1, 2, 3]  # step 3 was logged, its checkpoint never made
    resumed = make_trainer(tiny, tmp_path / "b", resume=True, **kw)
    resumed.train()
    assert resumed.step == 4

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    assert strip(read_metrics(run_b)) == strip(json.loads(json.dumps(straight)))


def test_each_epoch_visits_every_item_once_in_a_seeded_order(tiny, tmp_path):
    t = make_trainer(tiny, tmp_path, prompts_per_step=2)  # 4 items: steps 1-2 are epoch 0, steps 3-4 epoch 1
    epoch0 = t.sampler.items_for_step(1) + t.sampler.items_for_step(2)
    epoch1 = t.sampler.items_for_step(3) + t.sampler.items_for_step(4)
    assert sorted(epoch0) == sorted(PROMPTS) == sorted(epoch1)
    again = make_trainer(tiny, tmp_path / "again", prompts_per_step=2)
    assert again.sampler.items_for_step(2) == t.sampler.items_for_step(2)


def test_resume_without_a_checkpoint_starts_from_scratch(tiny, tmp_path):
    rows = make_trainer(tiny, tmp_path, resume=True, max_steps=1).train()
    assert [r["step"] for r in rows] == [1]


def test_reusing_a_run_dir_without_resume_is_refused(tiny, tmp_path):
    make_trainer(tiny, tmp_path, max_steps=1).train()
    with pytest.raises(FileExistsError, match="pass resume=True"):
        make_trainer(tiny, tmp_path, max_steps=1).train()


def test_nan_reward_stops_the_run_and_keeps_the_last_good_state(tiny, tmp_path):
    calls = {"n": 0}

    def bad(completions, items):
        calls["n"] += 1
        return torch.full((len(completions),), float("nan") if calls["n"] == 3 else 0.5)

    t = make_trainer(tiny, tmp_path, rewards={"noise": noise_reward, "bad": bad}, max_steps=5)
    with pytest.raises(TrainingStopped, match=r"step 3: bad: reward 'bad'") as err:
        t.train()
    assert (err.value.step, err.value.component) == (3, "bad")
    assert [r["step"] for r in read_metrics(t.config.run_dir)] == [1, 2]
    assert err.value.checkpoint == latest_checkpoint(t.config.run_dir)
    assert err.value.checkpoint.name == "step-000002"
    fresh = make_trainer(tiny, tmp_path / "fresh")
    assert load_checkpoint(err.value.checkpoint, fresh.policy)["step"] == 2
    for a, b in zip(lora_parameters(fresh.policy), t.params):  # the state after step 2, untouched by step 3
        assert torch.equal(a, b)


def test_nan_loss_stops_before_the_optimizer_step(tiny, tmp_path, monkeypatch):
    real = microbatch_module.policy_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(microbatch_module, "policy_loss", nan_loss)
    t = make_trainer(tiny, tmp_path, max_steps=2)
    before = [p.detach().clone() for p in t.params]
    with pytest.raises(TrainingStopped, match="step 1: loss") as err:
        t.train()
    assert err.value.checkpoint.name == "step-000000"
    for a, b in zip(before, t.params):
        assert torch.equal(a, b)


def test_unknown_reward_weight_is_an_error(tiny, tmp_path):
    policy, tok = load_causal_lm(tiny), load_tokenizer(tiny)
    with pytest.raises(ValueError, match=r"names \['semantic'\], which are not reward functions"):
        GRPOTrainer(policy, tok, {"noise": noise_reward}, PROMPTS, lambda p: p, make_config(tmp_path),
                    reward_weights={"semantic": 2.0})


def test_toy_reward_rises_within_a_bounded_number_of_steps(tiny, tmp_path):
    # A random tiny model's frozen output head has rows of norm ~0.16, so adapters on attention alone can barely
    # move its near-uniform distribution; an adapter on lm_head as well lets the toy task be learned in seconds.
    rows = make_trainer(tiny, tmp_path, rewards={"letter": letter_reward}, max_steps=24, prompts_per_step=4,
                        num_generations=4, max_completion_length=8, learning_rate=3e-2, lora_r=8, lora_alpha=16.0,
                        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "lm_head"), beta=0.0,
                        sample_interval=0).train()
    first = sum(r["reward"] for r in rows[:6]) / 6
    last = sum(r["reward"] for r in rows[-6:]) / 6
    assert last > first + 0.15, (first, last)


def test_prompt_longer_than_the_context_is_refused_before_any_compute(tiny, tmp_path, monkeypatch):
    # the tiny Llama's context is 1024 positions; the prompt keeps its last max_prompt_length tokens
    long_prompt = "one two three four five " * 300
    assert len(load_tokenizer(tiny).encode(long_prompt, add_special_tokens=False)) > 1000
    monkeypatch.setattr(trainer_module, "rollout", lambda *a, **k: pytest.fail("sampled before the check"))
    policy, tok = load_causal_lm(tiny), load_tokenizer(tiny)
    config = make_config(tmp_path, max_prompt_length=1000, max_completion_length=100)
    with pytest.raises(ValueError, match=r"training item 2 encodes to a prompt of 1000 tokens .* 1100 positions, "
                                         r"more than the model's context of 1024"):
        GRPOTrainer(policy, tok, {"noise": noise_reward}, ["a", "b", long_prompt], lambda p: p, config)
    # the same prompt fits once truncated to 900 tokens: 900 + 100 <= 1024
    GRPOTrainer(policy, tok, {"noise": noise_reward}, ["a", "b", long_prompt], lambda p: p,
                dataclasses.replace(config, max_prompt_length=900))


def test_resume_refuses_a_config_that_changes_the_run_and_names_the_field(tiny, tmp_path):
    make_trainer(tiny, tmp_path, max_steps=1).train()
    for field, value in (("learning_rate", 1e-3), ("seed", 7), ("prompts_per_step", 4), ("temperature", 0.7)):
        t = make_trainer(tiny, tmp_path, max_steps=2, resume=True, **{field: value})
        with pytest.raises(ValueError, match=rf"cannot resume .*step-000001.*: {field}: "):
            t.train()
        assert all(torch.equal(p, torch.zeros_like(p)) for n, p in t.policy.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match=r"reward functions and weights: \{'noise': 1.0\} in the checkpoint"):
        make_trainer(tiny, tmp_path, max_steps=2, resume=True,
                     rewards={"noise": noise_reward, "e": letter_reward}).train()
    # fields that only change how the same steps are computed or logged may change
    rows = make_trainer(tiny, tmp_path, max_steps=2, resume=True, save_interval=1, gradient_accumulation_steps=3,
                        progress=False, sample_interval=0).train()
    assert [r["step"] for r in rows] == [2]


class Drifting:
    """A reward with running state that every training call updates (as SemanticReward's off-target mean): its
    value is the noise reward plus 0.01 per earlier call, so a run whose state is reset logs other rewards."""

    def __init__(self, crash_at=None):
        self.calls, self.crash_at = 0, crash_at

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]

    def __call__(self, completions, items):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash()
        return noise_reward(completions, items) + 0.01 * self.calls


def test_resume_restores_the_reward_state_and_reproduces_the_uninterrupted_run(tiny, tmp_path):
    kw = dict(max_steps=4, save_interval=2)
    straight = make_trainer(tiny, tmp_path / "a", rewards={"drift": Drifting()}, **kw).train()
    with pytest.raises(Crash):
        make_trainer(tiny, tmp_path / "b", rewards={"drift": Drifting(crash_at=4)}, **kw).train()
    resumed = make_trainer(tiny, tmp_path / "b", rewards={"drift": Drifting()}, resume=True, **kw)
    resumed.train()  # a new process: a fresh reward object, whose state comes from checkpoint step 2
    assert resumed.reward_fns["drift"].calls == 4
    rows = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(tmp_path / "b" / "run")]
    assert rows == [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in json.loads(json.dumps(straight))]


def test_a_reward_raising_key_error_is_reported_as_itself_and_its_state_rolled_back(tiny, tmp_path):
    # KeyError('correctness') raised by the semantic reward names the semantic reward, not correctness
    calls = {"n": 0}

    def semantic(completions, items):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("correctness")
        return noise_reward(completions, items)

    rewards = {"drift": Drifting(), "correctness": letter_reward, "semantic": semantic}
    t = make_trainer(tiny, tmp_path, rewards=rewards, max_steps=5)
    with pytest.raises(TrainingStopped, match=r"step 3: semantic: reward 'semantic' raised KeyError") as err:
        t.train()
    assert err.value.component == "semantic"
    state = torch.load(err.value.checkpoint / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["extra"]["reward_state"] == {"drift": {"calls": 2}}  # as before step 3
    assert t.reward_fns["drift"].calls == 2
