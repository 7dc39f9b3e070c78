"""One next-token training loop for CPT and SFT: the two stages differ only in which tokens carry loss.

    loss = sum_{b,t} m[b, t+1] * -log p(x[b, t+1] | x[b, <=t]) / sum_{b,t} m[b, t+1]

where m is the loss mask: all ones on packed raw text (CPT), ones on the completion tokens only (SFT).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .optim import make_optimizer, warmup_cosine


@dataclass
class LMBatchData:
    """Tokenised training data for `train_lm`, all (N, T) long tensors, right-padded.

    input_ids: token ids; attention_mask: 1 on real tokens; loss_mask: 1 on tokens whose prediction is trained.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self):
        return self.input_ids.shape[0]


def concat_data(*parts):
    """Stack several LMBatchData (e.g. SFT examples and replayed CPT blocks) into one, right-padding to a width."""
    width = max(p.input_ids.shape[1] for p in parts)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731  zeros on the right
    return LMBatchData(*(torch.cat([pad(getattr(p, name)) for p in parts])
                         for name in ("input_ids", "attention_mask", "loss_mask")))


def masked_nll(logits, input_ids, loss_mask):
    """Mean next-token negative log-likelihood over the tokens where loss_mask is 1 (formula in the module docstring).

    logits (B, T, V) predict input_ids shifted by one; loss_mask (B, T) marks the *target* tokens.
    """
    targets = input_ids[:, 1:]  # (B, T-1)
    weights = loss_mask[:, 1:].float()  # (B, T-1)
    nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), reduction="none")
    return (nll * weights.flatten()).sum() / weights.sum().clamp(min=1.0)


def train_lm(model, data, *, steps, batch_size, lr, optimizer="adamw", weight_decay=0.0, warmup_steps=0,
             max_grad_norm=1.0, seed=0, desc="train", progress=True):
    """Full-parameter training of `model` on `data` (LMBatchData) for `steps` optimizer steps.

    Batches are drawn without replacement from a seeded permutation, reshuffled each epoch. Returns the
    per-step losses (floats) so callers can log or plot them.
    """
    if len(data) == 0:
        raise ValueError(f"{desc}: no training examples")
    model.train()
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, warmup_steps))
    gen = torch.Generator().manual_seed(seed)
    order, cursor, losses = torch.randperm(len(data), generator=gen), 0, []
    bar = tqdm(range(steps), desc=desc, disable=not progress, dynamic_ncols=True)
    for _ in bar:
        if cursor + batch_size > len(data):
            order, cursor = torch.randperm(len(data), generator=gen), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        mask = data.attention_mask[idx]
        width = int(mask.sum(1).max())  # right padding: drop the all-pad columns of this batch
        ids, mask, loss_mask = data.input_ids[idx, :width], mask[:, :width], data.loss_mask[idx, :width]
        logits = model(ids, attention_mask=mask)
        loss = masked_nll(logits, ids, loss_mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite loss {loss.item()} at step {len(losses)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
