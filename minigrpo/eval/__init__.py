"""Held-out evaluation of a policy: greedy answers scored by the same reward functions GRPO trains on, and a
cloze probe of the facts the model stores."""

from .evaluate import EvalResult, evaluate_policy
from .knowledge import cloze_accuracy

__all__ = ["EvalResult", "cloze_accuracy", "evaluate_policy"]
