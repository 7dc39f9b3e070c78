"""Held-out evaluation of a policy: greedy answers scored by the same reward functions GRPO trains on, a cloze
probe of the facts the model stores, a pairwise tournament between variants rated with Elo, and a report on
whether the reward can be gamed."""

from .elo import NoFiniteMaximum, bootstrap_intervals, bradley_terry, online_elo
from .evaluate import EvalResult, evaluate_policy
from .hacking import hacking_report, training_signals
from .judges import EncoderCosineJudge, LMPairJudge, ReferenceJudge
from .rating import explanation_of, load_variant_completions, rate_variants, save_variant_completions
from .tournament import elo_view, load_completions, run_tournament, save_completions

__all__ = ["EncoderCosineJudge", "EvalResult", "LMPairJudge", "NoFiniteMaximum", "ReferenceJudge",
           "bootstrap_intervals", "bradley_terry", "elo_view", "evaluate_policy", "explanation_of",
           "hacking_report", "load_completions", "load_variant_completions", "online_elo", "rate_variants",
           "run_tournament", "save_completions", "save_variant_completions", "training_signals"]
