"""Contrastive training of a small text encoder, so that its cosine similarity follows meaning.

The semantic reward needs an encoder whose embeddings of two explanations are close when they say the same
thing in different words. Qwen3-Embedding learned that from large paraphrase corpora; the miniature teaches a
tiny Qwen3 body the same property with the InfoNCE objective on groups of paraphrases:

    for B groups, draw two different texts (a_i, p_i) of group i; e = normalize(pool(body(text)))
    S_ij = e(a_i) . e(p_j) / tau                                   (B, B) scaled cosine similarities
    loss = ( CE(S, diag) + CE(S^T, diag) ) / 2                     the paraphrase must beat the B - 1 others

Every other group in the batch is a negative, including texts written from the same template about another fact,
which is what teaches the encoder to look past shared words.
"""

import random

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.encoder import pool
from ..train.optim import warmup_cosine


def embed_with_grad(body, tokenizer, texts, pooling="last"):
    """texts -> (N, C) L2-normalized embeddings with gradients (the trainable twin of Encoder.embed)."""
    ids, mask = tokenizer.batch_encode(texts, padding_side="left")  # (N, T) each
    device = body.embed_tokens.weight.device
    ids, mask = ids.to(device), mask.to(device)
    return F.normalize(pool(body(ids, mask), mask, pooling).float(), dim=-1)


def info_nce(anchors, positives, temperature):
    """Symmetric InfoNCE over (B, C) normalized embeddings, row i of each being a positive pair."""
    logits = anchors @ positives.T / temperature  # (B, B)
    labels = torch.arange(anchors.shape[0], device=anchors.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_encoder(body, tokenizer, groups, *, steps=300, batch_size=32, lr=2e-3, temperature=0.05, pooling="last",
                  seed=0, progress=True):
    """Train `body` (a Transformer) in place on `groups` (lists of >= 2 texts that mean the same); returns losses."""
    groups = [list(dict.fromkeys(g)) for g in groups]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        raise ValueError(f"train_encoder needs at least 2 groups of 2+ distinct texts, found {len(groups)}")
    rng = random.Random(seed)
    params = [p for p in body.parameters()]
    for p in params:
        p.requires_grad_(True)
    body.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, max(1, steps // 20)))
    losses = []
    bar = tqdm(range(steps), desc="encoder", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        batch = rng.sample(groups, min(batch_size, len(groups)))
        pairs = [rng.sample(g, 2) for g in batch]
        anchors = embed_with_grad(body, tokenizer, [a for a, _ in pairs], pooling)
        positives = embed_with_grad(body, tokenizer, [p for _, p in pairs], pooling)
        loss = info_nce(anchors, positives, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    body.eval()
    for p in params:
        p.requires_grad_(False)
    return losses


@torch.no_grad()
def paraphrase_margin(encoder, triplets):
    """Mean of cos(reference, paraphrase) - cos(reference, contrast), and the fraction of triplets where it is > 0.

    triplets: objects with .reference, .paraphrase, .contrast texts. encoder: anything with .embed(texts).
    """
    ref = encoder.embed([t.reference for t in triplets])
    para = encoder.embed([t.paraphrase for t in triplets])
    contrast = encoder.embed([t.contrast for t in triplets])
    margin = (ref * para).sum(-1) - (ref * contrast).sum(-1)  # (N,)
    return margin.mean().item(), (margin > 0).float().mean().item()
