"""Continued pre-training: next-token loss on raw domain text, packed into fixed-length blocks.

Packing: every text is tokenised, followed by the EOS token (so the model learns where a document ends), and the
whole stream is cut into blocks of `block_size` tokens; a last partial block is dropped. No padding, every token
carries loss. Documents may straddle a block boundary, as in ordinary LM pre-training.

Sentence shuffling: a small model trained many epochs on the same fixed paragraphs memorises each sentence from
its neighbours ("after the note on Egypt comes the note on Poland") and stores a fact in a form it cannot recall
from a question. Re-ordering the sentences in every copy of the corpus leaves the fact's own words as the only
cue, which makes it extractable (Allen-Zhu & Li, "Physics of Language Models: Part 3.1", 2023, find the same for
permuted biographies). `shuffled_sentence_copies` builds such an augmented corpus.
"""

import random
import re

import torch

from .loop import LMBatchData, train_lm


def pack_blocks(tokenizer, texts, block_size):
    """Concatenate tokenised `texts` (each + EOS) and cut into (N, block_size) blocks."""
    stream = []
    for text in texts:
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(f"corpus too small: {len(stream)} tokens, fewer than one block of {block_size}")
    ids = torch.tensor(stream[:n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
    ones = torch.ones_like(ids)
    return LMBatchData(input_ids=ids, attention_mask=ones, loss_mask=ones)


def shuffled_sentence_copies(texts, copies, seed=0, sentences_per_text=4):
    """`copies` re-orderings of all sentences of `texts`, regrouped into texts of `sentences_per_text` sentences.

    A sentence ends at ".", "!" or "?" followed by a space. Every sentence appears exactly `copies` times; each
    copy is an independent shuffle from `random.Random(seed)`.
    """
    if copies < 1 or sentences_per_text < 1:
        raise ValueError(f"copies and sentences_per_text must be >= 1, got {copies} and {sentences_per_text}")
    sentences = [s for text in texts for s in re.split(r"(?<=[.!?]) +", text.strip()) if s]
    rng, out = random.Random(seed), []
    for _ in range(copies):
        rng.shuffle(sentences)
        out += [" ".join(sentences[i:i + sentences_per_text]) for i in range(0, len(sentences), sentences_per_text)]
    return out


def run_cpt(model, tokenizer, texts, *, block_size=128, steps=200, batch_size=16, lr=1e-3, optimizer="adamw",
            seed=0, progress=True):
    """Pack `texts` and train every parameter of `model` on them; returns the per-step losses."""
    data = pack_blocks(tokenizer, texts, block_size)
    return train_lm(model, data, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    warmup_steps=max(1, steps // 20), seed=seed, desc="cpt", progress=progress)
