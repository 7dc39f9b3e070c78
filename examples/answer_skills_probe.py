"""Can the miniature's policy learn the two reading skills an MCQ answer rests on? A probe, from random init.

To answer a held-out question with a letter, a policy must carry out two steps that use no knowledge:

  copy     write again a word it has read, such as the entity of the question ("Recall: Poland - ...");
  lookup   go from the answer it recalled to the letter of the option that says it:
               A) Tokyo / B) Madrid / C) Rome / D) Warsaw ... Recall: Warsaw. Option  ->  " D"

A pretrained LLM arrives with both. The miniature's policy starts from random weights, and its held-out
accuracy stays at chance (README, Quickstart). This script trains the miniature's policy shape (same
tokenizer recipe, width and depth) on each skill alone, on the words of the synthetic corpus and no facts, and
prints how fast each one is learned:

  copy:    a random sequence of `--copy-length` words followed by the same sequence; loss on the repeat.
           Scored by token accuracy on the repeat of new sequences.
  lookup:  four random words as options A-D, then "Recall: <one of them>. Option" and its letter; loss on the
           letter only. Scored by accuracy on new items, with the training words and with held-out words.
           Chance is 1/4 and a guessing model's loss is ln 4 = 1.386.

Each task starts from the same random init and runs `--steps` steps of batch 16 with the SFT learning rate.

    python examples/answer_skills_probe.py --out runs/skills-probe
"""

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import torch

from minigrpo.miniature import init_weights_, make_synthetic_dataset, tiny_config, train_bpe_tokenizer
from minigrpo.models import CausalLM, ModelConfig
from minigrpo.train.loop import LMBatchData, train_lm

LETTERS = "ABCD"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/skills-probe", help="run directory (created): tokenizer/, results.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600, help="training steps per task")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (the miniature's SFT rate)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    p.add_argument("--hidden", type=int, default=128, help="policy width")
    p.add_argument("--layers", type=int, default=4, help="policy decoder blocks")
    p.add_argument("--copy-length", type=int, default=8, help="words per copy sequence")
    p.add_argument("--test-items", type=int, default=200, help="new items scored per task")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p.parse_args(argv)


def copy_example(tok, words, length, rng):
    """(ids, loss_mask): `length` random words, then the same words again; loss on the repeated tokens."""
    first = tok.encode(" " + " ".join(rng.choice(words) for _ in range(length)), add_special_tokens=False)
    return first + first, [0] * len(first) + [1] * len(first)


def lookup_example(tok, words, rng):
    """(ids, loss_mask): four options, "Recall: <the k-th>. Option", then " <letter k>"; loss on that letter."""
    options = rng.sample(words, len(LETTERS))
    k = rng.randrange(len(LETTERS))
    text = "Q?" + "".join(f"\n{letter}) {w}" for letter, w in zip(LETTERS, options)) + f"\nRecall: {options[k]}. Option"
    prompt = tok.encode(text, add_special_tokens=False)
    letter = tok.encode(f" {LETTERS[k]}", add_special_tokens=False)
    return prompt + letter, [0] * len(prompt) + [1] * len(letter)


def batch(examples, pad_id):
    """Right-padded LMBatchData from (ids, loss_mask) pairs."""
    shape = (len(examples), max(len(ids) for ids, _ in examples))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    loss_mask = torch.zeros(shape, dtype=torch.long)
    for i, (ids, mask) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention_mask[i, :len(ids)] = 1
        loss_mask[i, :len(ids)] = torch.tensor(mask)
    return LMBatchData(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask)


@torch.no_grad()
def token_accuracy(model, data):
    """Share of the loss-masked tokens that the model's argmax predicts, teacher forced."""
    model.eval()
    logits = model(data.input_ids, attention_mask=data.attention_mask)
    logits = getattr(logits, "logits", logits)  # (N, T, V)
    hits = (logits[:, :-1].argmax(-1) == data.input_ids[:, 1:]) & data.loss_mask[:, 1:].bool()  # (N, T-1)
    return hits.sum().item() / data.loss_mask[:, 1:].sum().item()


def corpus_words(corpus):
    """The distinct words of the corpus, sorted."""
    return sorted({w for paragraph in corpus for w in re.findall(r"[A-Za-z0-9]+", paragraph)})


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = make_synthetic_dataset(seed=args.seed)
    tok = train_bpe_tokenizer(list(ds.corpus), out / "tokenizer", args.vocab_size, style="llama")
    config = ModelConfig.from_hf_config(
        tiny_config("llama", tok.vocab_size, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                    num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2), source="probe")
    init = CausalLM(config)
    init_weights_(init, torch.Generator().manual_seed(args.seed))

    rng = random.Random(args.seed)
    words = corpus_words(ds.corpus)
    rng.shuffle(words)
    cut = int(0.8 * len(words))
    seen, unseen = words[:cut], words[cut:]  # lookup is also scored on words it never trained on
    n = args.steps * 16
    tasks = {
        "copy": (lambda ws: copy_example(tok, ws, args.copy_length, rng), {"new sequences": seen}),
        "lookup": (lambda ws: lookup_example(tok, ws, rng), {"training words": seen, "held-out words": unseen}),
    }
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    results = {"args": vars(args), "words": len(words), "chance_loss_lookup": math.log(len(LETTERS))}
    for name, (make, test_pools) in tasks.items():
        model = CausalLM(config)
        model.load_state_dict(init.state_dict())
        data = batch([make(seen) for _ in range(n)], pad)
        start = time.perf_counter()
        losses = train_lm(model, data, steps=args.steps, batch_size=16, lr=args.lr,
                          warmup_steps=max(1, args.steps // 20), seed=args.seed, desc=name, progress=False)
        every = max(1, args.steps // 8)
        accuracy = {label: token_accuracy(model, batch([make(pool) for _ in range(args.test_items)], pad))
                    for label, pool in test_pools.items()}
        results[name] = {"loss": {str(s + 1): losses[s] for s in range(every - 1, args.steps, every)},
                         "accuracy": accuracy, "seconds": round(time.perf_counter() - start, 1)}
        curve = "  ".join(f"{s}:{v:.3f}" for s, v in results[name]["loss"].items())
        print(f"{name}: loss by step  {curve}")
        print(f"{name}: accuracy  " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
