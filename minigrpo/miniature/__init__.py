"""What only the miniature needs: the scaffolding that lets the whole pipeline run on a laptop CPU with nothing
downloaded, kept out of the GRPO core.

    synthetic.py, synthetic_facts.py  a synthetic multi-subject MCQ dataset and its textbook corpus
    bpe.py, chat_templates.py         small byte-level BPE tokenizers in the Hugging Face file format
    tiny.py                           tiny random Llama / Qwen3 checkpoints in the real on-disk format
    encoder_training.py               contrastive (InfoNCE) training of a tiny encoder, and its paraphrase margin
    knowledge.py                      the cloze probe: does a model prefer a true fact over a false variant?

The core (models, generation, lora, grpo, rewards, data, train, eval) never imports this package; examples,
tests and benchmarks do.
"""

from .bpe import train_bpe_tokenizer, write_tiny_tokenizer
from .encoder_training import paraphrase_margin, train_encoder
from .knowledge import cloze_accuracy
from .synthetic import ParaphraseTriplet, SyntheticDataset, make_synthetic_dataset, paraphrase_triplets, write_dataset
from .synthetic_facts import Fact, Probe
from .tiny import init_weights_, make_tiny_checkpoint, tiny_config

__all__ = ["Fact", "ParaphraseTriplet", "Probe", "SyntheticDataset", "cloze_accuracy", "init_weights_",
           "make_synthetic_dataset", "make_tiny_checkpoint", "paraphrase_margin", "paraphrase_triplets",
           "tiny_config", "train_bpe_tokenizer", "train_encoder", "write_dataset", "write_tiny_tokenizer"]
