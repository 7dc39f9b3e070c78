"""The stages before GRPO: continued pre-training (CPT) on raw text and supervised fine-tuning (SFT)."""

from .cpt import pack_blocks, run_cpt, shuffled_sentence_copies
from .loop import LMBatchData, concat_data, masked_nll, train_lm
from .optim import make_optimizer, warmup_cosine
from .sft import build_sft_data, run_sft

__all__ = ["LMBatchData", "build_sft_data", "concat_data", "make_optimizer", "masked_nll", "pack_blocks", "run_cpt", "run_sft",
           "shuffled_sentence_copies", "train_lm", "warmup_cosine"]
