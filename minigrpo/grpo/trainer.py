"""GRPOTrainer: the training loop that turns rollouts into LoRA updates.

One step, in order (GRPOConfig's docstring says how steps, updates and micro-batches are counted):

  1. take prompts_per_step items from a seeded permutation of the data (a new permutation every epoch);
  2. rollout (rollout.py): generate G completions per prompt with the current policy, decode, score with every
     reward function, sum them (weights default 1), group advantages;
  3. no grad, per micro-batch: reference log-probs with the adapters disabled (skipped when beta = 0) and, when
     mu > 1, old log-probs with the adapters on (with mu = 1 old = logp.detach(), so the ratio is 1);
  4. mu times: for each micro-batch, log-probs with grad from the final hidden states (chunked over rows),
     policy_loss, backward of the loss scaled so that the micro-batches add up to the full batch's loss:
         grpo, dr_grpo  x rows_mb / rows      (each is a mean over its rows)
         bnpo           x tokens_mb / tokens  (each is a mean over its tokens; TRL divides by the number of
                                               micro-batches instead, which weights short micro-batches' tokens more)
         dapo           x 1, with num_items_in_batch = tokens of the whole batch
     then clip the global gradient norm, AdamW step (LoRA weights only), scheduler step;
  5. one row in metrics.jsonl; samples and checkpoints at their intervals.

A non-finite reward, loss or gradient norm stops the run before the optimizer step: the state as it was at the
start of the step (weights, optimizer, scheduler, RNG) is saved as checkpoint step - 1 and TrainingStopped names
the step and the component. The encoder inside a semantic reward is never touched here: reward functions run
under torch.no_grad and the trainer optimizes only the policy's LoRA tensors.

Gradient checkpointing: the hand-written Transformer's own `gradient_checkpointing` flag is switched on when it
exists; otherwise each block of `model.model.layers` gets its forward wrapped in torch.utils.checkpoint
(non-reentrant) while grad is on.
"""

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..lora import disable_adapters, inject_lora, lora_layers, lora_parameters
from ..train.optim import warmup_cosine
from .checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from .config import GRPOConfig
from .loss import policy_loss
from .metrics import JsonlLog, step_metrics
from .microbatch import Accumulator, enable_gradient_checkpointing, trim_padding
from .rollout import ScoringError, completion_logprobs, generate_and_score


class TrainingStopped(RuntimeError):
    """A non-finite value stopped training. .step, .component, .checkpoint (folder of the last good state)."""

    def __init__(self, message, step, component, checkpoint):
        super().__init__(message)
        self.step, self.component, self.checkpoint = step, component, checkpoint


class _NonFinite(Exception):
    def __init__(self, component, detail):
        super().__init__(detail)
        self.component, self.detail = component, detail


class GRPOTrainer:
    """GRPOTrainer(policy, tokenizer, reward_fns, items, prompt_fn, config, reward_weights=None).train()

    policy: a CausalLM (hidden_states, lm_head). LoRA is injected from the config unless the model already has
        (unmerged) adapters, which are then trained further. The KL reference is the policy with its adapters
        disabled, so an SFT stage done with LoRA must be merged into the weights (and the wrappers removed) first,
        or the reference would be the pre-SFT model.
    tokenizer: encode / batch_decode / eos_token_id / pad_token_id (minigrpo.models.load_tokenizer).
    reward_fns: name -> fn(completions: list[str], items: list) -> (N,) tensor, e.g. rewards.paper_rewards(enc).
    items: the training items; prompt_fn: item -> prompt text (chat template already applied), e.g.
        lambda it: render_prompt(it, tok, fmt).
    reward_weights: name -> weight; overrides config.reward_weights; missing names weigh 1.

    After train(), the policy holds the trained adapters (save_adapter(policy, dir) exports them; the run's
    checkpoints hold them too).
    """

    def __init__(self, policy, tokenizer, reward_fns, items, prompt_fn, config=None, reward_weights=None):
        self.config = c = config if config is not None else GRPOConfig()
        if not isinstance(c, GRPOConfig):
            raise TypeError(f"GRPOTrainer: config must be a GRPOConfig, found {type(c).__name__}")
        if not reward_fns or not all(callable(f) for f in reward_fns.values()):
            raise ValueError(f"GRPOTrainer: reward_fns must be a non-empty dict name -> callable, found {reward_fns!r}")
        if len(items) == 0:
            raise ValueError("GRPOTrainer: no training items")
        self.policy, self.tokenizer, self.items, self.prompt_fn = policy, tokenizer, list(items), prompt_fn
        self.reward_fns = dict(reward_fns)
        self.reward_weights = self._weights(c.reward_weights, reward_weights)
        self.device = torch.device(c.device if c.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
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
        if c.gradient_checkpointing:
            enable_gradient_checkpointing(policy)
        self.optimizer = torch.optim.AdamW(self.params, lr=c.learning_rate, betas=tuple(c.adam_betas),
                                           weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self.step = 0  # steps completed
        self.run_dir = Path(c.run_dir)
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl")
        self.samples = JsonlLog(self.run_dir / "samples.jsonl")
        self._perm = None  # (epoch, permutation of item indices), the one items_for_step used last
        self.update_stats = []  # per-update stats of the last step (one dict per mu iteration), for inspection

    # ---- public ----

    def train(self):
        """Run (or resume) until config.max_steps; returns the metrics rows logged by this call."""
        c = self.config
        self._prepare_run_dir()
        rows = []
        bar = tqdm(total=c.max_steps, initial=self.step, desc="grpo", disable=not c.progress, dynamic_ncols=True)
        while self.step < c.max_steps:
            step = self.step + 1
            rng_before = capture_rng(self.generator)
            snapshot = self._snapshot() if c.num_iterations > 1 else None
            try:
                row = self.train_step(step)
            except _NonFinite as e:
                self._stop(step, e, rng_before, snapshot)
            self.step = step
            self.metrics.append(row)
            rows.append(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl="-" if row["kl"] is None else f"{row['kl']:.4f}")
            if (c.save_interval and step % c.save_interval == 0) or step == c.max_steps:
                self.save(step, capture_rng(self.generator))
        bar.close()
        return rows

    def train_step(self, step):
        """One generation batch and its num_iterations updates; returns the metrics row."""
        c, t0 = self.config, time.perf_counter()
        try:
            batch = generate_and_score(self.policy, self.tokenizer, self.items_for_step(step), self.prompt_fn,
                                       self.reward_fns, self.reward_weights, c, generator=self.generator,
                                       device=self.device, autocast=self._autocast)
        except ScoringError as e:
            raise _NonFinite(e.component, str(e)) from e
        t_gen = time.perf_counter() - t0

        slices = self.micro_batches(batch)
        ref = self.reference_logprobs(batch, slices) if c.beta != 0 else None
        old = self.old_logprobs(batch, slices) if c.num_iterations > 1 else None

        self.update_stats, lrs = [], []
        for it in range(c.num_iterations):
            lrs.append(self.optimizer.param_groups[0]["lr"])
            self.optimizer.zero_grad(set_to_none=True)
            stats = self.accumulate_gradients(batch, slices, ref, old, with_entropy=(it == 0), iteration=it)
            max_norm = c.max_grad_norm if c.max_grad_norm is not None else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            if not math.isfinite(grad_norm):
                raise _NonFinite("grad_norm", f"gradient norm is {grad_norm} (iteration {it})")
            self.optimizer.step()
            self.scheduler.step()
            self.update_stats.append({**stats, "grad_norm": grad_norm})
        self.optimizer.zero_grad(set_to_none=True)
        return self._row(step, batch, time.perf_counter() - t0, t_gen, lrs[0])

    def items_for_step(self, step):
        """The prompts of step (1-based): positions (step-1)*P .. step*P-1 of the concatenated epoch permutations.

        Epoch e's permutation is a pure function of (seed, e), so resuming needs no sampler state.
        """
        n, P = len(self.items), self.config.prompts_per_step
        out = []
        for g in range((step - 1) * P, step * P):
            epoch, pos = divmod(g, n)
            if self._perm is None or self._perm[0] != epoch:
                seeded = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
                self._perm = (epoch, torch.randperm(n, generator=seeded).tolist())
            out.append(self.items[self._perm[1][pos]])
        return out

    def micro_batches(self, batch):
        """Row slices of the gradient_accumulation_steps equal micro-batches."""
        rows = self.config.micro_batch_rows
        return [slice(i, i + rows) for i in range(0, len(batch), rows)]

    def reference_logprobs(self, batch, slices):
        """Per micro-batch (B_mb, N_mb) log-probs under the base model (adapters disabled), no grad."""
        return self._no_grad_logprobs(batch, slices, adapters=False)

    def old_logprobs(self, batch, slices):
        """Per micro-batch (B_mb, N_mb) log-probs under the current policy, no grad (the pi_old of mu > 1)."""
        return self._no_grad_logprobs(batch, slices, adapters=True)

    def accumulate_gradients(self, batch, slices, ref=None, old=None, *, with_entropy=False, iteration=0):
        """Forward and backward every micro-batch, gradients adding up to the full batch's (module docstring).

        ref / old: lists of per-micro-batch log-probs, or None (beta = 0 / mu = 1). Does not step the optimizer.
        Returns full-batch stats: loss (sum of the scaled micro-batch losses), token means of ratio, clip
        fractions, kl and entropy.
        """
        c, n_rows = self.config, len(batch)
        total_tokens = int(batch.completion_mask.sum())
        self.policy.train()
        acc = Accumulator()
        for j, sl in enumerate(slices):
            p_ids, p_mask, c_ids, c_mask, adv = trim_padding(*batch.rows(sl))
            with self._autocast():
                logp, entropy = completion_logprobs(self.policy, p_ids, p_mask, c_ids, c_mask,
                                                    temperature=c.temperature, chunk_size=c.logprob_chunk_size,
                                                    with_entropy=with_entropy)
            loss, stats = policy_loss(
                logp, None if old is None else old[j], None if ref is None else ref[j], adv, c_mask, beta=c.beta,
                eps_low=c.eps_low, eps_high=c.eps_high, loss_type=c.loss_type,
                max_completion_length=c.max_completion_length,
                num_items_in_batch=total_tokens if c.loss_type == "dapo" else None)
            if not torch.isfinite(loss):
                raise _NonFinite("loss", f"loss is {loss.item()} (iteration {iteration}, micro-batch {j})")
            tokens = int(c_mask.sum())
            scale = {"grpo": len(c_ids) / n_rows, "dr_grpo": len(c_ids) / n_rows,
                     "bnpo": tokens / max(total_tokens, 1), "dapo": 1.0}[c.loss_type]
            (loss * scale).backward()
            ent = None if entropy is None else float((entropy.detach() * c_mask).sum())
            acc.add(stats, scale * stats["loss"], tokens, ent)
        return acc.result()

    def save(self, step, rng_state):
        return save_checkpoint(self.run_dir, step, self.policy, self.optimizer, self.scheduler, rng_state,
                               config=self.config.to_dict(), keep=self.config.save_total_limit)

    # ---- internals ----

    def _no_grad_logprobs(self, batch, slices, adapters):
        """Per micro-batch (B_mb, N_mb) log-probs under the current policy (adapters=True) or the base model."""
        out = []
        self.policy.eval()  # same numbers the update's forward computes (no adapter dropout)
        ctx = contextlib.nullcontext() if adapters else disable_adapters(self.policy)
        with torch.no_grad(), ctx, self._autocast():
            for sl in slices:
                p_ids, p_mask, c_ids, c_mask, _ = trim_padding(*batch.rows(sl))
                logp, _ = completion_logprobs(self.policy, p_ids, p_mask, c_ids, c_mask,
                                              temperature=self.config.temperature,
                                              chunk_size=self.config.logprob_chunk_size)
                out.append(logp)
        return out

    def _row(self, step, batch, step_time, gen_time, lr):
        """The metrics.jsonl row of a step; every sample_interval steps a few completions go to samples.jsonl."""
        row = step_metrics(step, batch, self.update_stats, self.config, step_time=step_time, gen_time=gen_time, lr=lr)
        c = self.config
        if c.sample_interval and step % c.sample_interval == 0 and c.num_samples:
            for i in range(min(c.num_samples, len(batch))):
                self.samples.append({
                    "step": step, "prompt": self.prompt_fn(batch.items[i]), "completion": batch.completions[i],
                    "rewards": {k: v[i].item() for k, v in batch.rewards.items()}, "total": batch.total[i].item(),
                    "advantage": batch.advantages[i].item(), "truncated": bool(batch.truncated[i])})
        return row

    def _prepare_run_dir(self):
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(self.run_dir)
        if c.resume:  # no checkpoint yet: start from step 0, dropping rows a crashed first attempt logged
            if ckpt is not None and self.step == 0:
                state = load_checkpoint(ckpt, self.policy, self.optimizer, self.scheduler, map_location=self.device)
                restore_rng(state["rng"], self.generator)
                self.step = state["step"]
            self.metrics.truncate_after(self.step)
            self.samples.truncate_after(self.step)
        elif self.step == 0 and (ckpt is not None or self.metrics.read()):
            raise FileExistsError(
                f"GRPOTrainer: run_dir {self.run_dir} already holds a run (checkpoints or metrics.jsonl); "
                f"pass resume=True to continue it, or choose another run_dir")
        (self.run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2))

    def _stop(self, step, err, rng_before, snapshot):
        if snapshot is not None:  # mu > 1: earlier updates of this step already changed the weights
            self._restore(snapshot)
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save(step - 1, rng_before)
        raise TrainingStopped(
            f"training stopped at step {step}: {err.component}: {err.detail}. The optimizer was not stepped with "
            f"it; the last good state (step {step - 1}) is saved in {path}", step, err.component, path) from err

    def _snapshot(self):
        return ([p.detach().clone() for p in self.params], copy.deepcopy(self.optimizer.state_dict()),
                copy.deepcopy(self.scheduler.state_dict()))

    def _restore(self, snapshot):
        weights, opt, sched = snapshot
        with torch.no_grad():
            for p, w in zip(self.params, weights):
                p.copy_(w)
        self.optimizer.load_state_dict(opt)
        self.scheduler.load_state_dict(sched)

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
