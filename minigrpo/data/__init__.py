"""MCQ items, the completion format, prompts and SFT targets."""

from .formats import R1_FORMAT, CompletionFormat, ParsedCompletion
from .mcq import MCQItem, load_mcq_jsonl, save_mcq_jsonl
from .prompts import DEFAULT_SYSTEM_PROMPT, build_messages, format_question, render_prompt, sft_target

__all__ = ["DEFAULT_SYSTEM_PROMPT", "R1_FORMAT", "CompletionFormat", "MCQItem", "ParsedCompletion", "build_messages",
           "format_question", "load_mcq_jsonl", "render_prompt", "save_mcq_jsonl", "sft_target"]
