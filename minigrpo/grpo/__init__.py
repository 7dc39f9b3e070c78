"""GRPO, as implemented here, and where it departs from DeepSeekMath's GRPO (Shao et al., 2024) and from TRL's
GRPOTrainer defaults.

1. Objective. For each prompt, G completions o_1..o_G are sampled; per token t of o_i
       L_it = -min(w_it A_i, clip(w_it, 1 - eps_low, 1 + eps_high) A_i) + beta * k3_it,
       w_it = pi_theta(o_it) / pi_old(o_it),   k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1,
   and the loss aggregates L over the completion tokens. This is DeepSeekMath's eq. 3 with outcome supervision
   (one scalar reward per completion, its advantage broadcast to every token); no process supervision, no
   iterative retraining of a reward model.
2. Advantages: A_i = (r_i - mean_g) / (std_g + eps), eps = 1e-4 added to the std, std with Bessel's correction
   (n - 1), as TRL; DeepSeekMath writes (r - mean) / std without fixing either. Options beyond both: a std floor,
   A = (r - mean) / (max(std, std_floor) + eps), against continuous rewards (cosine similarities) whose tiny
   within-group spread would otherwise be blown up to +-1; scale="batch" and scale="none" as TRL's
   scale_rewards. A group whose rewards are all equal gets exactly 0, a group of one gets 0.
3. Aggregation: loss_type "grpo" (default here) is DeepSeekMath's 1/G sum_i 1/|o_i| sum_t; TRL defaults to
   "dapo" (token sum over the global token count). "bnpo", "dr_grpo" and "dapo" are available, each equal to
   TRL's on a batch taken whole. With gradient accumulation the trainer weights each micro-batch's loss by its
   share of the batch's rows (grpo, dr_grpo) or tokens (bnpo), and gives dapo the batch's token count, so the
   micro-batches add up to the whole batch and their number changes memory, not the update. TRL divides by the
   number of micro-batches instead, which for bnpo is a mean of micro-batch token means that depends on the split
   (loss.py says more).
4. KL: the k3 estimator is added to each token's loss before aggregation (DeepSeekMath and TRL), so it is
   weighted by the same normalizer. The trainer's beta defaults to 0.04, DeepSeekMath's value; TRL's default is
   0.0 (no KL, no reference forward). `policy_loss` itself takes beta as a required keyword.
5. Reference policy: the base model with the LoRA adapters disabled, i.e. the checkpoint the adapters were
   injected into, never updated (TRL's choice for a fresh PEFT adapter; no second copy of any weight).
   DeepSeekMath's reference is the initial policy, reset to the current one at each iteration of iterative GRPO.
6. Old policy: with one gradient step per generation (mu = 1) old_logp = logp.detach(), so the ratio is 1 in
   value, nothing is clipped and the gradient is A * grad(logp) (TRL; DeepSeekMath also makes a single update
   per exploration stage). For loss_type "grpo" the loss value is then beta * KL on average (the advantage term
   averages to 0 over each group), not a training signal to watch; the token-weighted loss types add a term that
   weights each advantage by its completion's length.
7. Clip band: eps_high may exceed eps_low (DAPO's clip-higher); None means symmetric. No dual clip, no cap
   (TRL's delta) and no clamping of the log-ratio before exp (verl clamps to [-20, 20]).
8. Log-probs are those of softmax(logits / temperature), the sampling temperature, for the policy, old and
   reference alike (TRL; DeepSeekMath does not say). They are computed a chunk of rows at a time straight from
   the final hidden states, with a hand-derived backward, so no float32 (B, T, V) tensor exists
   (logprobs.token_logprobs_from_hidden; the plain log_softmax is its oracle and logprob_chunk_size=0).
9. k3 is computed as expm1(d) - d with d = ref_logp - logp: TRL's exp(d) - d - 1 in value (they differ by float
   rounding, about 1e-7 in float32), but never negative.
10. Sampler: with float32 base weights, completions are sampled from the merged weights W + s * B @ A
   (lora.merged: no adapter matmuls per token; W is restored bit for bit afterwards), which equal the policy up
   to float32 rounding; old log-probs are then recomputed through the adapters, as TRL does when vLLM holds
   merged weights. bf16 models sample through the unmerged adapters unless merge_for_generation=True.
   Each completion draws its tokens from its own random stream, keyed by (seed, step, prompt index, completion
   index) (generation.sampling.stream_seed, rollout.rollout_seeds): what it samples depends neither on the other
   rows of its batch nor on how the run was split or resumed.
11. Data parallel (torchrun): the number of processes changes the speed, not the run. prompts_per_step is the
   global batch and each rank samples whole groups; completion j of prompt p draws from a random stream keyed by
   (seed, step, p, j), never by rank (10); advantages come from the all-gathered rewards; every normaliser that
   spans the batch (rows, tokens, the reward std of scale="batch", the questions the semantic reward's off-target
   baseline averages over) is the global batch's; one all-reduce sums the LoRA gradients. TRL (through
   accelerate) also gathers the rewards and uses the global token count for dapo, but seeds sampling per process,
   so its completions depend on the number of processes, and its bnpo divides by each process's own token count
   before DDP averages them.

Modules, in the order GRPOTrainer.train_step calls them:
    prompt_sampler.py   which items a step draws its prompts from
    rollout.py          prompts -> RolloutBatch: G sampled, decoded completions per prompt
    minigrpo.rewards    scoring: every reward function, and their weighted sum
    advantages.py       group-relative advantages
    logprobs.py         per-token log-probs: the fused fast path and the plain oracle
    kl.py, loss.py      the k3 KL estimate; the clipped policy loss and the micro-batch weights
    microbatch.py       the update a micro-batch at a time (forwards, weighted backwards), gradient checkpointing
    metrics.py          the metrics.jsonl and samples.jsonl rows; hacking_signals.py, the hacking/* keys
and around the step: config.py (GRPOConfig), checkpoint.py (atomic checkpoints, RNG states), resume.py (what a
resumed run may change), lifecycle.py (opening run_dir, resuming, stopping at a failure with the last good state
saved), distributed.py (torchrun: the process group and the step's collectives), trainer.py (GRPOTrainer: the
loop, one step's stages in order).

Public API:
    group_advantages, token_logprobs, token_entropy, token_logprobs_from_hidden, completion_logprobs,
    kl_estimate, policy_loss; GRPOConfig, GRPOTrainer, TrainingStopped, RolloutBatch, rollout
"""

from .advantages import group_advantages
from .kl import kl_estimate
from .logprobs import completion_logprobs, token_entropy, token_logprobs, token_logprobs_from_hidden
from .loss import policy_loss

__all__ = [
    "group_advantages",
    "token_logprobs",
    "token_entropy",
    "token_logprobs_from_hidden",
    "completion_logprobs",
    "kl_estimate",
    "policy_loss",
]

# The training loop built on the functions above (config, rollout, trainer, checkpoints).
from .config import GRPOConfig  # noqa: E402
from .rollout import RolloutBatch, rollout  # noqa: E402
from .lifecycle import TrainingStopped  # noqa: E402
from .trainer import GRPOTrainer  # noqa: E402

__all__ += ["GRPOConfig", "GRPOTrainer", "TrainingStopped", "RolloutBatch", "rollout"]
