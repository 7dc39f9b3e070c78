import json
import re
from collections import Counter, defaultdict

import pytest
from rouge_score import rouge_scorer

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import load_mcq_jsonl
from minigrpo.data.prompts import sft_target
from minigrpo.eval.judges import states
from minigrpo.miniature.synthetic import make_synthetic_dataset, paraphrase_triplets, write_dataset
from minigrpo.miniature.synthetic_facts import knowledge_facts

TABLE_SUBJECTS = {"biology", "chemistry", "physics", "geography"}


@pytest.fixture(scope="module")
def ds():
    return make_synthetic_dataset(seed=0)


def test_same_seed_gives_identical_dataset_and_other_seed_differs(ds):
    again = make_synthetic_dataset(seed=0)
    assert (again.train, again.eval, again.corpus, again.reasoning) == (ds.train, ds.eval, ds.corpus, ds.reasoning)
    other = make_synthetic_dataset(seed=1)
    assert other.train != ds.train and other.eval != ds.eval and other.corpus != ds.corpus


def test_default_sizes_cover_six_subjects_in_both_splits(ds):
    assert (len(ds.train), len(ds.eval)) == (400, 100)
    for items in (ds.train, ds.eval):
        assert set(Counter(it.subject for it in items)) == TABLE_SUBJECTS | {"arithmetic", "logic"}
    ids = [it.id for it in ds.train + ds.eval]
    assert len(set(ids)) == len(ids)


def test_custom_sizes_and_too_many_items_is_an_error():
    small = make_synthetic_dataset(seed=3, n_train=30, n_eval=12, n_options=3)
    assert (len(small.train), len(small.eval)) == (30, 12)
    assert all(list(it.options) == ["A", "B", "C"] for it in small.train + small.eval)
    # 10560 logic puzzles exist in all: the eval split takes 6000, leaving too few for 6000 train items
    with pytest.raises(ValueError, match=r"expected n_train <= \d+ \(the train questions available\), found 6000"):
        make_synthetic_dataset(seed=0, n_train=6000, n_eval=6000)


def test_train_and_eval_share_no_fact_and_no_reference_explanation(ds):
    train_facts = {ds.fact_of[it.id] for it in ds.train}
    eval_facts = {ds.fact_of[it.id] for it in ds.eval}
    assert not train_facts & eval_facts
    # No phrasing of an eval fact is taught by SFT, neither as an explanation nor inside a reasoning.
    train_text = {e for it in ds.train for e in it.explanations} | {ds.reasoning[it.id] for it in ds.train}
    for it in ds.eval:
        for phrasing in ds.fact(it).explanations:
            assert phrasing not in train_text
        assert ds.fact(it).note not in " ".join(ds.reasoning[t.id] for t in ds.train)


def test_every_eval_table_fact_is_stated_in_the_corpus_in_every_phrasing(ds):
    corpus = "\n".join(ds.corpus)
    eval_table_facts = {ds.fact_of[it.id] for it in ds.eval if it.subject != "logic"}
    assert len(eval_table_facts) >= 30
    for key in eval_table_facts:
        fact = ds.facts[key]
        assert fact.in_corpus
        for phrasing in fact.explanations:
            assert phrasing in corpus, phrasing
        assert fact.note + "." in corpus


def test_options_have_consecutive_letters_distinct_texts_and_the_answer_once(ds):
    letters = Counter()
    for it in ds.train + ds.eval:
        assert list(it.options) == ["A", "B", "C", "D"]
        texts = list(it.options.values())
        assert len(set(texts)) == 4
        assert texts.count(it.answer_text) == 1
        letters[it.answer] += 1
    # shuffled options: every letter is the gold one for a fair share of items
    assert min(letters.values()) > 0.15 * sum(letters.values())


def test_table_questions_have_exactly_one_true_option(ds):
    # "Which of these animals is a mammal?" must not offer two mammals, "On which continent is Peru?" one continent.
    truth = defaultdict(set)
    for fact in knowledge_facts():
        entity, value = fact.note.removeprefix("Recall: ").split(" - ")
        truth[fact.relation].add((entity, value))
    for it in ds.train + ds.eval:
        if it.subject not in TABLE_SUBJECTS:
            continue
        fact = ds.fact(it)
        entity, value = fact.note.removeprefix("Recall: ").split(" - ")
        pairs = truth[fact.relation]
        if it.answer_text == value:
            true_options = [o for o in it.options.values() if (entity, o) in pairs]
        else:
            assert it.answer_text == entity
            true_options = [o for o in it.options.values() if (o, value) in pairs]
        assert true_options == [it.answer_text], it


def test_arithmetic_and_logic_answers_are_what_the_question_computes(ds):
    comparatives = {"taller": "shorter", "older": "younger", "faster": "slower", "heavier": "lighter"}
    n_checked = 0
    for it in ds.train + ds.eval:
        if it.subject == "arithmetic":
            a, b = map(int, re.findall(r"\d+", it.question))
            if "+" in it.question or "add" in it.question:
                assert int(it.answer_text) == a + b
            else:  # "a - b" or "take b away from a"
                a, b = (b, a) if "away" in it.question else (a, b)
                assert int(it.answer_text) == a - b
            n_checked += 1
        elif it.subject == "logic":
            above = {}  # name -> names it beats on the comparative
            for x, word, y in re.findall(r"(\w+) is (\w+) than (\w+)\.", it.question):
                if word in comparatives:
                    above[x] = y
                else:
                    above[y] = x
            names = set(above) | set(above.values())
            top = (names - set(above.values())).pop()
            bottom = (names - set(above)).pop()
            asks_top = any(it.question.endswith(f"the {s}?") for s in ("tallest", "oldest", "fastest", "heaviest"))
            assert it.answer_text == (top if asks_top else bottom), it
            n_checked += 1
    assert n_checked >= 150


def test_texts_are_short(ds):
    def words(text):
        return len(text.split())

    assert max(words(it.question) for it in ds.train + ds.eval) <= 25
    assert max(words(e) for f in ds.facts.values() for e in f.explanations) <= 30
    assert max(words(r) for r in ds.reasoning.values()) <= 30


def test_reasoning_names_the_gold_option_and_the_sft_target_parses_back(ds):
    fmt = CompletionFormat()
    for it in ds.train[:50]:
        reasoning = ds.reasoning[it.id]
        assert reasoning.endswith(f"Option {it.answer} is {it.answer_text}, so the answer is {it.answer}.")
        parsed = fmt.parse(sft_target(it, fmt, reasoning))
        assert parsed.well_formed and (parsed.reasoning, parsed.explanation, parsed.answer) == (
            reasoning, it.explanation, it.answer)


def test_every_fact_has_several_distinct_phrasings_and_paraphrases_exclude_the_reference(ds):
    for fact in ds.facts.values():
        assert len(fact.explanations) >= 3 and len(set(fact.explanations)) == len(fact.explanations)
    for it in ds.eval:
        assert it.explanation == ds.fact(it).explanations[ds.template_of[it.id]]
        assert it.explanation not in ds.paraphrases(it)
        assert len(ds.paraphrases(it)) == len(ds.fact(it).explanations) - 1
    used = Counter(ds.template_of[it.id] for it in ds.train)
    assert len(used) >= 3  # references are drawn among the phrasings, not always the first


def test_every_phrasing_states_the_key_terms_and_one_of_them_is_the_answer(ds):
    terms = ds.key_terms()
    assert set(terms) == {it.id for it in ds.train + ds.eval}
    for it in ds.train + ds.eval:
        assert len(terms[it.id]) >= 2, it.id
        assert it.answer_text in terms[it.id], it.id  # the judge's g term and its key terms agree on the answer
        for text in ds.fact(it).explanations:  # the reference and every paraphrase
            assert all(states(text, t) for t in terms[it.id]), (it.id, text, terms[it.id])
    assert ds.key_terms(ds.eval[:2]) == {it.id: terms[it.id] for it in ds.eval[:2]}


def test_paraphrases_share_fewer_words_than_same_template_explanations_of_other_facts(ds):
    # The property the semantic-vs-ROUGE comparison relies on: ROUGE-L ranks a same-template explanation of
    # ANOTHER fact above a paraphrase of the SAME fact. Checked per subject, on both splits.
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = lambda a, b: scorer.score(a, b)["rougeL"].fmeasure  # noqa: E731
    for split in ("train", "eval"):
        triplets = paraphrase_triplets(ds, split, seed=0)
        assert len(triplets) == len(getattr(ds, split))
        by_subject = defaultdict(lambda: [0.0, 0.0, 0])
        for t in triplets:
            assert t.reference != t.paraphrase and t.reference != t.contrast
            assert ds.facts[ds.fact_of[t.item_id]].explanations.count(t.paraphrase) == 1
            acc = by_subject[ds.fact(t.item_id).subject]
            acc[0] += rouge(t.reference, t.paraphrase)
            acc[1] += rouge(t.reference, t.contrast)
            acc[2] += 1
        for subject, (para, contrast, n) in by_subject.items():
            assert para / n + 0.15 < contrast / n, (split, subject, para / n, contrast / n)


def test_write_dataset_files_load_back(ds, tmp_path):
    paths = write_dataset(ds, tmp_path / "synth")
    assert load_mcq_jsonl(paths["train.jsonl"]) == ds.train
    assert load_mcq_jsonl(paths["eval.jsonl"]) == ds.eval
    assert paths["corpus.txt"].read_text(encoding="utf-8").splitlines() == ds.corpus
    assert json.loads(paths["reasoning.json"].read_text(encoding="utf-8")) == ds.reasoning
