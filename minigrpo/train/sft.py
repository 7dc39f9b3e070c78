"""Supervised fine-tuning: teach the answer format with loss on the completion tokens only.

Each example is a rendered prompt followed by its target completion and EOS. The prompt tokens are context
(loss mask 0); the completion tokens and the EOS carry loss (mask 1), so the model learns to write the format
and to stop. The chat template already emits any BOS, so the prompt is tokenised without special tokens.
"""

import torch

from .loop import LMBatchData, concat_data, train_lm


def build_sft_data(tokenizer, prompts, targets, max_length=512):
    """Tokenise (prompt, target) pairs into right-padded LMBatchData; loss on target + EOS tokens only."""
    if len(prompts) != len(targets):
        raise ValueError(f"build_sft_data: {len(prompts)} prompts but {len(targets)} targets")
    rows, masks = [], []
    for i, (prompt, target) in enumerate(zip(prompts, targets)):
        p = tokenizer.encode(prompt, add_special_tokens=False)
        c = tokenizer.encode(target, add_special_tokens=False)
        if tokenizer.eos_token_id is not None:
            c = c + [tokenizer.eos_token_id]
        if len(p) + len(c) > max_length:
            raise ValueError(f"SFT example {i}: {len(p) + len(c)} tokens exceed max_length={max_length}")
        rows.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, :len(r)] = torch.tensor(r)
        attention[i, :len(r)] = 1
        loss_mask[i, :len(r)] = torch.tensor(m)
    return LMBatchData(input_ids=ids, attention_mask=attention, loss_mask=loss_mask)


def run_sft(model, tokenizer, prompts, targets, *, steps=200, batch_size=16, lr=1e-3, max_length=512, seed=0,
            replay=None, progress=True):
    """Train every parameter of `model` to continue each prompt with its target; returns the per-step losses.

    replay: optional LMBatchData of pre-training blocks mixed into the SFT examples (rehearsal), so that SFT
    teaches the format without overwriting the knowledge CPT put in the weights.
    """
    data = build_sft_data(tokenizer, prompts, targets, max_length)
    if replay is not None:
        data = concat_data(data, replay)
    return train_lm(model, data, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 20),
                    seed=seed, desc="sft", progress=progress)
