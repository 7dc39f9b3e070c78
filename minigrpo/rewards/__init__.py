"""Reward functions for GRPO on multiple-choice explanations.

Every reward is batched: `fn(completions: list[str], items: list[MCQItem]) -> torch.Tensor (N,) float32`, with
items[i] the question completions[i] answers, and carries a `.name`. `combine_rewards` sums them into the scalar
reward and keeps each component for logging.
"""

from minigrpo.rewards.answer import CorrectnessReward, CoTReward, FormatReward, answer_letter
from minigrpo.rewards.combine import (RewardBreakdown, RewardError, combine_rewards, eval_mode, global_batch,
                                      load_reward_state, paper_rewards, reward_state)
from minigrpo.rewards.judge import DEFAULT_JUDGE_PROMPT, JudgeReward, LMJudge, judge_question, parse_grade
from minigrpo.rewards.rouge import RougeLReward
from minigrpo.rewards.semantic import SemanticReward

__all__ = [
    "CorrectnessReward", "CoTReward", "FormatReward", "answer_letter",
    "SemanticReward", "RougeLReward",
    "LMJudge", "JudgeReward", "parse_grade", "judge_question", "DEFAULT_JUDGE_PROMPT",
    "RewardBreakdown", "RewardError", "combine_rewards", "eval_mode", "global_batch", "paper_rewards", "reward_state",
    "load_reward_state",
]
