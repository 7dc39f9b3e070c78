"""Knowledge probe: does a model prefer the true statement of a fact over the same sentence with a wrong option?

For an item whose reference explanation contains its gold option's text g, each option o gives a sentence
s_o = the explanation with g replaced by o, and the model scores it by its summed log-likelihood

    score(o) = sum_{t >= 1} log p(s_o[t] | s_o[0..t-1])        (s_o[0] is BOS when the tokenizer adds one)

The item counts as known when the gold option scores strictly highest; `cloze_accuracy` is the fraction of known
items. No chat template, no answer format, no generation: it reads what CPT stored in the weights, which a model
can hold without being able to use it to answer a question (knowledge *storage* vs *extraction*, in the terms of
Allen-Zhu & Li, "Physics of Language Models: Part 3.1"). Summed, not length-normalised, log-likelihoods are used,
as in lm-evaluation-harness's `acc`; options of very different token lengths bias it toward the shorter ones.
"""

import torch


def cloze_sentences(item):
    """(sentences, gold index) for an item, one sentence per option; None when the reference lacks the gold text."""
    explanation, gold = item.explanations[0], item.options[item.answer]
    if gold not in explanation:
        return None
    letters = list(item.options)
    return [explanation.replace(gold, item.options[k]) for k in letters], letters.index(item.answer)


@torch.no_grad()
def sentence_logprobs(model, tokenizer, sentences, batch_size=64):
    """Summed log-likelihood of each sentence under `model` (a CausalLM), a (N,) float32 tensor."""
    device = model.lm_head.weight.device
    out = []
    for start in range(0, len(sentences), batch_size):
        ids, mask = tokenizer.batch_encode(sentences[start:start + batch_size], padding_side="right")
        ids, mask = ids.to(device), mask.to(device)  # (B, T); right pads never influence earlier positions
        logits = model(ids, mask).float()  # (B, T, V)
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        out.append((logp * mask[:, 1:]).sum(dim=1).cpu())
    return torch.cat(out)


def cloze_accuracy(model, tokenizer, items, batch_size=64):
    """Fraction of items (among those `cloze_sentences` can probe) whose true sentence scores highest.

    Returns (accuracy, number of items probed); (nan, 0) when no item can be probed.
    """
    probes = [p for p in map(cloze_sentences, items) if p is not None]
    if not probes:
        return float("nan"), 0
    was_training = model.training
    model.eval()
    try:
        scores = sentence_logprobs(model, tokenizer, [s for sentences, _ in probes for s in sentences], batch_size)
    finally:
        model.train(was_training)
    known, offset = 0, 0
    for sentences, gold in probes:
        row = scores[offset:offset + len(sentences)]
        offset += len(sentences)
        others = torch.cat([row[:gold], row[gold + 1:]])
        known += int(others.numel() == 0 or bool(row[gold] > others.max()))
    return known / len(probes), len(probes)
