"""GRPOTrainer: the training loop that turns rollouts into LoRA updates.

One step (`train_step`) calls the paper's stages in order, each from the module named for it (GRPOConfig's
docstring says how steps, updates and micro-batches are counted):

  1. sample prompts     prompt_sampler.py  prompts_per_step items, from epochs of seeded permutations; each
                                           data-parallel rank keeps its share of whole groups
  2. roll out           rollout.py         G completions per prompt from the current policy, decoded; completion
                                           j of prompt p samples from a stream keyed by (seed, step, p, j)
  3. score              rewards/combine    every reward function, summed with its weight (default 1)
  4. advantages         advantages.py      group-relative, A (B*G,), over the global batch
  5. ref and old logp   microbatch.py,     no grad, per micro-batch: the reference with the adapters disabled
                        logprobs.py        (skipped when beta = 0) and, when mu > 1, the old policy
                                           (with mu = 1 old = logp.detach(), so the ratio is 1)
  6. mu updates         microbatch.py,     per micro-batch: log-probs with grad, policy_loss, backward of the loss
                        loss.py            times loss.micro_batch_weight, so the micro-batches add up to the full
                                           batch; then sum the gradients over the ranks, clip the gradient
                                           norm, AdamW step (LoRA weights only), scheduler step
  7. metrics            metrics.py         one row in metrics.jsonl, a few completions in samples.jsonl;
                                           `train` then saves a checkpoint at its interval (checkpoint.py)

Around the steps (lifecycle.py), `train` opens run_dir (or resumes the run in it), and a reward that fails or is not
finite, or a non-finite loss or gradient norm, stops the run before the optimizer step, with the state from the
start of the step saved as checkpoint step - 1. The encoder inside a semantic reward is never touched here: reward
functions run under torch.no_grad and the trainer optimizes only the policy's LoRA tensors. Before any compute,
the trainer checks that every training prompt fits the model's context with max_completion_length new tokens.

Under torchrun (`torchrun --nproc_per_node N script.py`) the same trainer runs data-parallel: prompts_per_step is
the global batch, each rank rolls out and scores its share, and the few collectives that make the run the same as
on one process are the calls into distributed.py, whose docstring lists what each rank does. Only rank 0 writes
metrics.jsonl, samples.jsonl and checkpoints; every rank resumes from the checkpoint rank 0 names.
"""

import contextlib
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.formats import CompletionFormat
from ..lora import disable_adapters, inject_lora, lora_layers, lora_parameters
from ..rewards import RewardError, combine_rewards, global_batch, reward_state
from ..train.optim import warmup_cosine
from .advantages import group_advantages
from .checkpoint import capture_rng, save_checkpoint
from .config import GRPOConfig
from .distributed import (all_gather, all_reduce_gradients, all_sum, broadcast_object, broadcast_parameters,
                          check_split, describe_failure, gather_objects, is_main, own_rows, raise_together, rank,
                          setup, shard, world_size)
from .lifecycle import NonFinite, last_good_state, open_run_dir, stop
from .metrics import JsonlLog, completion_values, step_metrics
from .microbatch import accumulate_gradients, enable_gradient_checkpointing, micro_batches, no_grad_logprobs
from .prompt_sampler import PromptSampler
from .rollout import check_prompts_fit, rollout, rollout_seeds


class GRPOTrainer:
    """GRPOTrainer(policy, tokenizer, reward_fns, items, prompt_fn, config, reward_weights=None, fmt=None).train()

    policy: a CausalLM (hidden_states, lm_head). LoRA is injected from the config unless the model already has
        (unmerged) adapters, which are then trained further. The KL reference is the policy with its adapters
        disabled, so an SFT stage done with LoRA must be merged into the weights first (lora.merge_and_unload),
        or the reference would be the pre-SFT model.
    tokenizer: encode / batch_decode / eos_token_id / pad_token_id (minigrpo.models.load_tokenizer).
    reward_fns: name -> fn(completions: list[str], items: list) -> (N,) tensor, e.g. rewards.paper_rewards(enc).
        A function with state_dict() / load_state_dict() (SemanticReward) has its state checkpointed.
    items: the training items; prompt_fn: item -> prompt text (chat template already applied), e.g.
        lambda it: render_prompt(it, tok, fmt).
    reward_weights: name -> weight; overrides config.reward_weights; missing names weigh 1.
    fmt: the CompletionFormat whose explanation the hacking/copy_question_frac signal reads; None takes the `.fmt`
        of the first reward function that has one (paper_rewards' all do), else CompletionFormat().

    Under torchrun every rank builds the same trainer (same policy, items, config); the first one to reach it
    joins the process group (distributed.setup). After train(), the policy holds the trained adapters on every
    rank (save_adapter(policy, dir) exports them; the run's checkpoints hold them too).
    """

    def __init__(self, policy, tokenizer, reward_fns, items, prompt_fn, config=None, reward_weights=None, fmt=None):
        self.config = c = config if config is not None else GRPOConfig()
        if not isinstance(c, GRPOConfig):
            raise TypeError(f"GRPOTrainer: config must be a GRPOConfig, found {type(c).__name__}")
        if not reward_fns or not all(callable(f) for f in reward_fns.values()):
            raise ValueError(f"GRPOTrainer: reward_fns must be a non-empty dict name -> callable, found {reward_fns!r}")
        if len(items) == 0:
            raise ValueError("GRPOTrainer: no training items")
        self.policy, self.tokenizer, self.prompt_fn = policy, tokenizer, prompt_fn
        self.reward_fns = dict(reward_fns)
        self.reward_weights = self._weights(c.reward_weights, reward_weights)
        self.fmt = fmt or next((f.fmt for f in self.reward_fns.values() if hasattr(f, "fmt")), CompletionFormat())
        self.sampler = PromptSampler(items, c.prompts_per_step, c.seed)
        check_prompts_fit(tokenizer, self.sampler.items, prompt_fn, c, policy.config.max_position_embeddings)
        self.device = setup(c.device, c.dist_timeout)  # joins torchrun's process group, if launched by it
        check_split(c.prompts_per_step, c.num_generations, c.gradient_accumulation_steps)
        self.amp_dtype = _amp_dtype(c.dtype, self.device)

        merged = [name for name, m in lora_layers(policy) if m.merged]
        if merged:
            raise ValueError(f"GRPOTrainer: LoRA layer {merged[0]!r} is merged into its base weight, so the "
                             f"reference (adapters disabled) cannot be computed; unmerge_lora(policy) first")
        torch.manual_seed(c.seed)  # adapter init
        if not lora_layers(policy):
            inject_lora(policy, r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout, targets=tuple(c.lora_targets))
        policy.to(self.device)
        for p in policy.parameters():
            p.requires_grad_(False)
        self.params = lora_parameters(policy)
        for p in self.params:
            p.requires_grad_(True)
        broadcast_parameters(self.params)  # every rank starts from rank 0's adapters, as DDP does
        if c.gradient_checkpointing:
            enable_gradient_checkpointing(policy)
        self.optimizer = torch.optim.AdamW(self.params, lr=c.learning_rate, betas=tuple(c.adam_betas),
                                           weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0  # steps completed
        self.run_dir = Path(c.run_dir)
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl", write=is_main())
        self.samples = JsonlLog(self.run_dir / "samples.jsonl", write=is_main())
        self.update_stats = []  # per-update stats of the last step (one dict per mu iteration), for inspection

    # ---- public ----

    def train(self):
        """Run (or resume) until config.max_steps; returns the metrics rows logged by this call (on every rank)."""
        c = self.config
        open_run_dir(self)
        rows = []
        bar = tqdm(total=c.max_steps, initial=self.step, desc="grpo", disable=not (c.progress and is_main()),
                   dynamic_ncols=True)
        while self.step < c.max_steps:
            step = self.step + 1
            last_good = last_good_state(self)
            try:
                row = self.train_step(step)
            except (RewardError, NonFinite) as e:
                stop(self, step, e, last_good)  # rolls back, saves checkpoint step - 1, raises TrainingStopped
            except BaseException as e:  # anything else ends this process; say which rank, for the other N - 1
                if world_size() > 1:
                    print(describe_failure(e, step), file=sys.stderr, flush=True)
                raise
            self.step = step
            self.metrics.append(row)
            rows.append(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl="-" if row["kl"] is None else f"{row['kl']:.4f}")
            if (c.save_interval and step % c.save_interval == 0) or step == c.max_steps:
                self.save(step, capture_rng(), reward_state(self.reward_fns))
        bar.close()
        return rows

    def train_step(self, step):
        """One generation batch and its num_iterations updates; returns the metrics row (of the global batch)."""
        c, t0 = self.config, time.perf_counter()
        # 1. sample prompts: the step's global batch, of which this rank keeps a contiguous share of whole groups
        step_items = self.sampler.items_for_step(step)
        items, first = shard(step_items)
        # 2. roll out: completion j of prompt p samples from the stream keyed (seed, step, p, j)
        seeds = rollout_seeds(c.seed, step, range(first, first + len(items)), c.num_generations)
        batch = rollout(self.policy, self.tokenizer, items, self.prompt_fn, c, row_seeds=seeds, device=self.device,
                        autocast=self._autocast)
        t_gen = time.perf_counter() - t0
        # 3. score this rank's completions  4. advantages over the global batch; keep this rank's rows
        scores = self.score(batch, step_items)
        advantages, adv_stats = group_advantages(all_gather(scores.total), c.num_generations, scale=c.scale_rewards,
                                                 eps=c.adv_eps, std_floor=c.std_floor)
        advantages = own_rows(advantages)
        # 5. reference and old log-probs, per micro-batch
        slices = micro_batches(len(batch), c.gradient_accumulation_steps)
        ref = self.reference_logprobs(batch, slices) if c.beta != 0 else None
        old = self.old_logprobs(batch, slices) if c.num_iterations > 1 else None
        # 6. mu updates, each: log-probs, policy_loss and backward per micro-batch, then one optimizer step
        lr = self.optimizer.param_groups[0]["lr"]  # the first update's, for the metrics row
        self.update_stats = [self.update(batch, advantages.to(self.device), slices, ref, old, iteration=it)
                             for it in range(c.num_iterations)]
        # 7. metrics of the global batch (train() writes the row and saves checkpoints)
        values = all_gather(completion_values(batch, scores, self.fmt))
        row = step_metrics(step, values, adv_stats, self.update_stats, c, world_size=world_size(),
                           prompt_truncated=all_sum(batch.prompt_truncated), step_time=time.perf_counter() - t0,
                           gen_time=t_gen, lr=lr)
        self._log_samples(step, batch, scores, advantages)
        return row

    def score(self, batch, step_items):
        """This rank's RewardBreakdown. Rewards that span the batch (SemanticReward's off-target baseline) see the
        step's global batch, `step_items`; a reward failing on any rank raises RewardError on every rank."""
        failure, scores = None, None
        with global_batch(self.reward_fns, step_items, all_sum):
            try:
                scores = combine_rewards(self.reward_fns, self.reward_weights, batch.completions, batch.items)
            except RewardError as e:
                failure = e
        raise_together(failure)
        return scores

    def reference_logprobs(self, batch, slices):
        """Per micro-batch (B_mb, N_mb) log-probs under the base model (adapters disabled), no grad."""
        with disable_adapters(self.policy):
            return no_grad_logprobs(self.policy, batch, slices, self.config, self._autocast)

    def old_logprobs(self, batch, slices):
        """Per micro-batch (B_mb, N_mb) log-probs under the current policy, no grad (the pi_old of mu > 1)."""
        return no_grad_logprobs(self.policy, batch, slices, self.config, self._autocast)

    def update(self, batch, advantages, slices, ref=None, old=None, *, iteration=0):
        """One optimizer update on the whole batch: accumulate every micro-batch's gradient, clip, step.

        Returns the update's full-batch stats (microbatch.accumulate_gradients) with its grad_norm.
        """
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        stats = accumulate_gradients(self.policy, batch, advantages, slices, c, ref, old, autocast=self._autocast,
                                     with_entropy=(iteration == 0), iteration=iteration)
        all_reduce_gradients(self.params)  # the ranks' parts, each divided by the global normaliser, add up
        max_norm = c.max_grad_norm if c.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if not math.isfinite(grad_norm):
            raise NonFinite("grad_norm", f"gradient norm is {grad_norm} (iteration {iteration})")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**stats, "grad_norm": grad_norm}

    def save(self, step, rng_state, rewards_state=None):
        """Rank 0 writes checkpoint `step`; every rank returns its folder once it is complete."""
        extra = {"reward_state": rewards_state or {}, "reward_weights": self.reward_weights}
        path = save_checkpoint(self.run_dir, step, self.policy, self.optimizer, self.scheduler, rng_state,
                               config=self.config.to_dict(), extra=extra,
                               keep=self.config.save_total_limit) if is_main() else None
        return broadcast_object(path)

    # ---- internals ----

    def _log_samples(self, step, batch, scores, advantages):
        """Every sample_interval steps, the first num_samples completions of the global batch, with their rewards,
        go to samples.jsonl (gathered from the ranks that hold them; rank 0 writes)."""
        c = self.config
        if not (c.sample_interval and step % c.sample_interval == 0 and c.num_samples):
            return
        first_row = rank() * len(batch)  # this rank's first row in the global batch
        records = [{
            "step": step, "prompt": self.prompt_fn(batch.items[i]), "completion": batch.completions[i],
            "rewards": {k: v[i].item() for k, v in scores.components.items()}, "total": scores.total[i].item(),
            "advantage": advantages[i].item(), "truncated": bool(batch.truncated[i])}
            for i in range(min(c.num_samples - first_row, len(batch)))]
        for record in gather_objects(records):
            self.samples.append(record)

    def _lr_factor(self, update):
        c = self.config
        if c.lr_schedule == "constant":
            return min(1.0, (update + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        return warmup_cosine(update, c.total_updates, c.warmup_steps, min_ratio=c.min_lr_ratio)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _weights(self, from_config, from_arg):
        weights = {name: 1.0 for name in self.reward_fns}
        for source, given in (("config.reward_weights", from_config), ("reward_weights", from_arg)):
            unknown = sorted(set(given or {}) - set(weights))
            if unknown:
                raise ValueError(f"GRPOTrainer: {source} names {unknown}, which are not reward functions "
                                 f"(expected a subset of {sorted(weights)})")
            weights.update({k: float(v) for k, v in (given or {}).items()})
        return weights


def _amp_dtype(name, device):
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
