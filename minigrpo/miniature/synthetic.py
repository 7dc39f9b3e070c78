"""A small synthetic MCQ dataset with a matching textbook corpus, for running the whole pipeline on a CPU.

Six subjects (biology, chemistry, physics, geography from fact tables; arithmetic and logic computed), short
texts and a small vocabulary, so that a model of a few hundred thousand parameters can learn them in minutes:

  corpus     textbook paragraphs stating EVERY table fact, in all its phrasings, plus review notes and the
             ordering rules: the continued pre-training text;
  train      MCQ items for SFT and GRPO;
  eval       held-out MCQ items about OTHER facts: no fact (hence no answer and no reference explanation) is
             shared with train, but each one is stated in the corpus, so a model that learned the corpus and
             the answering skill can answer it; arithmetic and logic answers can also be worked out;
  reasoning  item id -> a short reasoning for the SFT target ("The question is about ... Recall: ...").

Each item's reference explanation is one phrasing of its fact, drawn at random; `paraphrases` gives the other
phrasings, and `paraphrase_triplets` pairs each reference with a paraphrase (same meaning, few shared words)
and a contrast (same template, another fact: many shared words, other meaning) to check that an encoder's
embeddings follow meaning where ROUGE-L follows words.

Everything is drawn from one `random.Random(seed)`: the same seed gives the same dataset.
"""

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..data.mcq import LETTERS, MCQItem, save_mcq_jsonl
from .synthetic_facts import arithmetic_facts, knowledge_facts, logic_facts, logic_rules


@dataclass(frozen=True)
class SyntheticDataset:
    """The output of `make_synthetic_dataset`.

    train, eval: lists of MCQItem. corpus: list of paragraphs. reasoning: item id -> reasoning text.
    facts: fact key -> Fact: every table fact, and every puzzle some item asks. fact_of: item id -> fact key.
    template_of: item id -> index of the reference explanation in its fact's `explanations`.
    """

    train: list
    eval: list
    corpus: list
    reasoning: dict
    facts: dict
    fact_of: dict
    template_of: dict

    def fact(self, item):
        """The Fact an item (or item id) asks about."""
        return self.facts[self.fact_of[getattr(item, "id", item)]]

    def paraphrases(self, item):
        """The other phrasings of the item's fact: same meaning as its reference explanation, other words."""
        item_id = getattr(item, "id", item)
        fact = self.facts[self.fact_of[item_id]]
        return tuple(t for i, t in enumerate(fact.explanations) if i != self.template_of[item_id])

    def key_terms(self, items=None):
        """{item id: the terms of its fact (Fact.terms)} over `items` (default: train and eval), the per-item words
        `minigrpo.eval.ReferenceJudge(key_terms=...)` looks for in an explanation."""
        return {it.id: self.fact(it).terms for it in (self.train + self.eval if items is None else items)}


@dataclass(frozen=True)
class ParaphraseTriplet:
    """reference: an item's reference explanation; paraphrase: the same fact in another template;
    contrast: another fact of the same relation in the reference's template."""

    item_id: str
    reference: str
    paraphrase: str
    contrast: str


def make_synthetic_dataset(seed=0, n_train=400, n_eval=100, eval_fraction=0.25, n_options=4):
    """Build the dataset (see the module docstring).

    Args:
        seed: seed of the single random stream; the same seed gives identical items, corpus and reasoning.
        n_train, n_eval: item counts. Subjects take turns, so they are balanced until one runs out of facts.
        eval_fraction: share of each relation's facts held out for eval items (at least one per relation).
        n_options: options per item (2 to 5), the correct one plus distractors from the same relation; fewer
            when a relation has fewer wrong answers.
    """
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options: expected 2 to {len(LETTERS)}, found {n_options}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction: expected a value in (0, 1), found {eval_fraction}")
    rng = random.Random(seed)

    by_relation = defaultdict(list)
    for fact in knowledge_facts() + arithmetic_facts():
        by_relation[fact.relation].append(fact)
    split_facts = {"train": [], "eval": []}
    for relation in sorted(by_relation):
        facts = by_relation[relation]
        rng.shuffle(facts)
        k = max(1, round(eval_fraction * len(facts)))
        split_facts["eval"] += facts[:k]
        split_facts["train"] += facts[k:]
    # Puzzles are drawn, not tabulated: one per item is more than the round robin below can use.
    puzzles = logic_facts(rng, n_eval + n_train)
    split_facts["eval"] += puzzles[:n_eval]
    split_facts["train"] += puzzles[n_eval:]

    reasoning, fact_of, template_of = {}, {}, {}
    splits = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        chosen = _round_robin(split_facts[split], n, rng, split)
        items = []
        for subject, index, fact, probe in chosen:
            item_id = f"{split}-{subject}-{index:03d}"
            item, reason, t = _make_item(item_id, fact, probe, n_options, rng)
            items.append(item)
            reasoning[item_id], fact_of[item_id], template_of[item_id] = reason, fact.key, t
        rng.shuffle(items)
        splits[split] = items

    # Every table fact (asked or not, all are in the corpus) and the puzzles that made it into an item.
    used = set(fact_of.values())
    all_facts = {f.key: f for f in split_facts["train"] + split_facts["eval"] if f.in_corpus or f.key in used}
    corpus = _make_corpus([f for f in all_facts.values() if f.in_corpus], rng)
    return SyntheticDataset(train=splits["train"], eval=splits["eval"], corpus=corpus, reasoning=reasoning,
                            facts=all_facts, fact_of=fact_of, template_of=template_of)


def _round_robin(facts, n, rng, split):
    """n (subject, index within subject, fact, probe) tuples, subjects taking turns in a fixed order."""
    pools = defaultdict(list)
    for fact in facts:
        pools[fact.subject] += [(fact, probe) for probe in fact.probes]
    for subject in sorted(pools):
        rng.shuffle(pools[subject])
    available = sum(len(p) for p in pools.values())
    if n > available:
        raise ValueError(f"make_synthetic_dataset: expected n_{split} <= {available} (the {split} questions "
                         f"available), found {n}; lower it or change eval_fraction")
    chosen, taken = [], defaultdict(int)
    while len(chosen) < n:
        for subject in sorted(pools):
            if len(chosen) < n and taken[subject] < len(pools[subject]):
                fact, probe = pools[subject][taken[subject]]
                chosen.append((subject, taken[subject], fact, probe))
                taken[subject] += 1
    return chosen


def _make_item(item_id, fact, probe, n_options, rng):
    """One MCQItem from a probe: shuffled options, a reference drawn among the fact's phrasings, a reasoning."""
    wrong = rng.sample(list(probe.distractors), min(n_options - 1, len(probe.distractors)))
    texts = [probe.answer] + wrong
    rng.shuffle(texts)
    options = dict(zip(LETTERS, texts))
    letter = LETTERS[texts.index(probe.answer)]
    t = rng.randrange(len(fact.explanations))
    item = MCQItem(id=item_id, question=probe.question, options=options, answer=letter,
                   explanations=(fact.explanations[t],), subject=fact.subject)
    reason = (f"The question is about {fact.topic}. {fact.note}. Option {letter} is {probe.answer}, so the "
              f"answer is {letter}.")
    return item, reason, t


def _make_corpus(facts, rng, sentences_per_paragraph=4, notes_per_paragraph=6):
    """Textbook paragraphs: every phrasing of every fact, review notes, and the ordering rules, shuffled."""
    by_relation = defaultdict(list)
    for fact in facts:
        by_relation[fact.relation].append(fact)
    paragraphs = list(logic_rules())
    for relation in sorted(by_relation):
        group = by_relation[relation]
        sentences = [text for fact in group for text in fact.explanations]
        rng.shuffle(sentences)
        paragraphs += [" ".join(sentences[i:i + sentences_per_paragraph])
                       for i in range(0, len(sentences), sentences_per_paragraph)]
        notes = [fact.note + "." for fact in group]
        rng.shuffle(notes)
        paragraphs += [f"Review notes on {group[0].topic}. " + " ".join(notes[i:i + notes_per_paragraph])
                       for i in range(0, len(notes), notes_per_paragraph)]
    rng.shuffle(paragraphs)
    return paragraphs


def paraphrase_triplets(ds, split="eval", seed=0):
    """A ParaphraseTriplet per item of `split`: reference, same-fact paraphrase, same-template contrast.

    A meaning-aware similarity should score sim(reference, paraphrase) > sim(reference, contrast), while
    ROUGE-L, which counts shared words in order, tends to rank them the other way.
    """
    rng = random.Random(seed)
    by_relation = defaultdict(list)
    for fact in ds.facts.values():
        by_relation[fact.relation].append(fact)
    triplets = []
    for item in getattr(ds, split):
        fact, t = ds.fact(item), ds.template_of[item.id]
        others = [f for f in by_relation[fact.relation] if f.key != fact.key and f.explanations[t] != item.explanation]
        if not others:
            continue
        paraphrase = rng.choice(ds.paraphrases(item))
        triplets.append(ParaphraseTriplet(item.id, item.explanation, paraphrase, rng.choice(others).explanations[t]))
    return triplets


def write_dataset(ds, out_dir):
    """Write train.jsonl, eval.jsonl, corpus.txt (one paragraph per line) and reasoning.json (id -> text).

    Returns {name: path}. The JSONL files load back with `load_mcq_jsonl`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("train.jsonl", "eval.jsonl", "corpus.txt", "reasoning.json")}
    save_mcq_jsonl(ds.train, paths["train.jsonl"])
    save_mcq_jsonl(ds.eval, paths["eval.jsonl"])
    paths["corpus.txt"].write_text("\n".join(ds.corpus) + "\n", encoding="utf-8")
    paths["reasoning.json"].write_text(json.dumps(ds.reasoning, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return paths
