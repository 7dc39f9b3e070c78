"""Held-out evaluation of a policy: greedy answers scored by the same reward functions GRPO trains on."""

from .evaluate import EvalResult, evaluate_policy

__all__ = ["EvalResult", "evaluate_policy"]
