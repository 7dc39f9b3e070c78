"""Evaluate a policy on held-out MCQ items with greedy decoding.

For each item the policy writes one completion (temperature 0), which is scored by every reward function:

    accuracy        = mean over items of the correctness reward (1 if the parsed answer letter is the gold one)
    format_rate     = mean of the format reward (1 if the completion follows the structure exactly)
    reward          = mean of the total reward  sum_k w_k r_k  (the quantity GRPO maximises)
    rewards[name]   = mean of each component

Every completion is kept (`EvalResult.completions`, one per item, in item order), so a pairwise tournament
(`tournament.py`) can judge them later without generating again; `as_dict` leaves them out of the metrics.

Greedy decoding makes the numbers a property of the model alone, not of a sampling seed. Reward functions with
running state (SemanticReward's off-target mean) are scored in eval mode, so evaluating never changes training.
"""

from dataclasses import asdict, dataclass, field

import torch

from ..generation import encode_prompts, generate, pad_id
from ..rewards import combine_rewards, eval_mode


@dataclass
class EvalResult:
    accuracy: float
    format_rate: float
    reward: float
    rewards: dict = field(default_factory=dict)  # component name -> mean
    accuracy_by_subject: dict = field(default_factory=dict)  # item subject -> accuracy (items with a subject)
    mean_completion_tokens: float = 0.0
    samples: list = field(default_factory=list)  # a few (prompt, completion, breakdown) dicts to read
    completions: list = field(default_factory=list, repr=False)  # every greedy completion, in item order

    def as_dict(self):
        """The metrics as a JSON-ready dict, without `completions` (save those with tournament.save_completions)."""
        out = asdict(self)
        del out["completions"]
        return out


@torch.no_grad()
def evaluate_policy(model, tokenizer, items, prompt_fn, reward_fns, *, weights=None, max_new_tokens=128,
                    max_prompt_length=512, batch_size=32, correctness="correctness", fmt_reward="format",
                    num_samples=3):
    """Greedy completions for `items`, scored by `reward_fns` (name -> fn); returns an EvalResult.

    `correctness` and `fmt_reward` name the components reported as accuracy and format_rate.
    """
    for name in (correctness, fmt_reward):
        if name not in reward_fns:
            raise ValueError(f"evaluate_policy needs a {name!r} reward; got {sorted(reward_fns)}")
    was_training = model.training
    model.eval()
    completions, lengths = [], []
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            # the same prompts as GRPO rollouts: left-truncated, so a long prompt keeps its answer cue
            ids, mask, _ = encode_prompts(tokenizer, [prompt_fn(it) for it in batch], max_prompt_length)
            out = generate(model, ids, mask, max_new_tokens=max_new_tokens, temperature=0.0,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id(tokenizer))
            lengths += out.completion_mask.sum(1).tolist()
            completions += tokenizer.batch_decode([row[m.bool()].tolist() for row, m in
                                                   zip(out.completion_ids, out.completion_mask)])
    finally:
        model.train(was_training)
    with eval_mode(reward_fns):
        scores = combine_rewards(reward_fns, weights, completions, list(items))
    samples = [{"prompt": prompt_fn(items[i]), "completion": completions[i],
                "rewards": {k: round(v[i].item(), 4) for k, v in scores.components.items()}}
               for i in range(min(num_samples, len(items)))]
    correct, by_subject = scores.components[correctness], {}
    for i, item in enumerate(items):
        if getattr(item, "subject", None):
            by_subject.setdefault(item.subject, []).append(correct[i].item())
    return EvalResult(
        accuracy=correct.mean().item(),
        format_rate=scores.components[fmt_reward].mean().item(),
        reward=scores.total.mean().item(),
        rewards={k: v.mean().item() for k, v in scores.components.items()},
        accuracy_by_subject={s: sum(v) / len(v) for s, v in sorted(by_subject.items())},
        mean_completion_tokens=sum(lengths) / max(1, len(lengths)),
        samples=samples,
        completions=completions,
    )
