"""From prompt texts to the model's inputs: token ids, left truncation and padding, position ids.

Every caller that feeds prompts to a policy (GRPO rollouts, held-out evaluation) encodes them here, and every
forward over a left-padded batch (sampling, log-probs) takes its position ids from `position_ids`, so a prompt is
read the same way when it is sampled from, scored, and evaluated.

    texts ─encode (add_special_tokens=False), keep the last max_length tokens─▶ rows of ids
          ─left-pad with pad_id─▶ ids (B, Tp), mask (B, Tp)          position p[b, t] = real tokens up to t, - 1
"""

import torch


def pad_id(tokenizer):
    """The id used for padding: the tokenizer's pad token, else its (first) EOS, else 0. Pads are masked out,
    so the value only has to be a valid id."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    return eos if eos is not None else 0


def prompt_token_ids(tokenizer, text, max_length):
    """(ids, truncated): the prompt's token ids, keeping its last max_length tokens.

    Left truncation (TRL's choice for prompts) keeps the end of the prompt: the question, its options and the
    chat template's generation header, without which the model would not start its answer. The text is tokenized
    as is (add_special_tokens=False), as SFT does: a rendered chat template already holds its BOS.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"encode_prompts: prompt {text[:60]!r} encodes to zero tokens")
    return (ids[-max_length:], True) if len(ids) > max_length else (ids, False)


def encode_prompts(tokenizer, texts, max_length, device="cpu"):
    """Tokenize, left-truncate (see prompt_token_ids) and left-pad prompts.

    Returns (ids (B, Tp) long, mask (B, Tp) long, number of prompts truncated).
    """
    rows, cut = [], 0
    for text in texts:
        ids, truncated = prompt_token_ids(tokenizer, text, max_length)
        rows.append(ids)
        cut += truncated
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device), cut


def position_ids(mask):
    """pos[b, t] = (number of real tokens in row b up to and including column t) - 1, and 0 on pads.

    Left padding does not shift positions: mask [0, 0, 1, 1, 1] -> [0, 0, 0, 1, 2], the positions the same prompt
    has unpadded. Pads get 0 (they are never attended to; the value only has to be a valid index). (B, T) long.
    """
    positions = mask.long().cumsum(dim=-1) - 1
    return positions.masked_fill(mask == 0, 0)
