"""MCQ items, the completion format, prompts and SFT targets, and the synthetic dataset with its corpus."""

from .formats import R1_FORMAT, CompletionFormat, ParsedCompletion
from .mcq import MCQItem, load_mcq_jsonl, save_mcq_jsonl
from .prompts import DEFAULT_SYSTEM_PROMPT, build_messages, format_question, render_prompt, sft_target
from .synthetic import (ParaphraseTriplet, SyntheticDataset, make_synthetic_dataset, paraphrase_triplets,
                        write_dataset)
from .synthetic_facts import Fact, Probe

__all__ = ["DEFAULT_SYSTEM_PROMPT", "R1_FORMAT", "CompletionFormat", "Fact", "MCQItem", "ParaphraseTriplet",
           "ParsedCompletion", "Probe", "SyntheticDataset", "build_messages", "format_question", "load_mcq_jsonl",
           "make_synthetic_dataset", "paraphrase_triplets", "render_prompt", "save_mcq_jsonl", "sft_target",
           "write_dataset"]
