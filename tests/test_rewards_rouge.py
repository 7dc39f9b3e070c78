import string

import pytest
import torch
from hypothesis import given, settings, strategies as st
from rouge_score import rouge_scorer
from rouge_score import tokenizers as rouge_tokenizers

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.rewards.rouge import RougeLReward, UnicodeTokenizer

FMT = CompletionFormat()


def item(*refs):
    return MCQItem(id="q", question="q?", options={"A": "a", "B": "b"}, answer="A", explanations=tuple(refs))


def completion(explanation):
    return FMT.render("reasoning", explanation, "A")


def lcs_length(x, y):
    """Longest common subsequence by the textbook dynamic programme."""
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_hand_computed_lcs_f1():
    # candidate: the cat sat on the mat (6 tokens); reference: the cat lay on a mat (6 tokens)
    # LCS = the cat on mat = 4 -> P = R = 4/6 -> F1 = 2/3
    out = RougeLReward()([completion("The cat sat on the mat.")], [item("the cat lay on a mat")])
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(2 / 3, abs=1e-6)


def test_unequal_lengths_hand_computed():
    # candidate: a b c (3); reference: a x b y z (5); LCS = a b = 2 -> P = 2/3, R = 2/5, F1 = 2PR/(P+R) = 1/2
    out = RougeLReward()([completion("a b c")], [item("a x b y z")])
    assert out.item() == pytest.approx(0.5, abs=1e-6)


def test_max_over_references():
    out = RougeLReward()([completion("the cat sat on the mat")],
                         [item("completely different words", "the cat lay on a mat")])
    assert out.item() == pytest.approx(2 / 3, abs=1e-6)


def test_missing_explanation_scores_zero():
    assert RougeLReward()(["no tags", completion("")], [item("ref text"), item("ref text")]).tolist() == [0.0, 0.0]


def test_stemmer_option_is_passed_to_rouge_score():
    c, refs = [completion("cats running")], [item("cat run")]
    assert RougeLReward(use_stemmer=False)(c, refs).item() == 0.0
    assert RougeLReward(use_stemmer=True)(c, refs).item() == pytest.approx(1.0)


_words = st.lists(st.sampled_from(["il", "gatto", "the", "cat", "sat", "on", "mat", "a", "b"]), max_size=12)


@settings(max_examples=100, deadline=None)
@given(candidate=_words, reference=_words.filter(bool))
def test_equals_rouge_score_and_textbook_lcs(candidate, reference):
    cand, ref = " ".join(candidate), " ".join(reference)
    ours = RougeLReward()([completion(cand)], [item(ref)]).item()
    theirs = rouge_scorer.RougeScorer(["rougeL"]).score(ref, cand)["rougeL"].fmeasure
    assert ours == pytest.approx(theirs, abs=1e-6)
    lcs = lcs_length(candidate, reference)
    textbook = 0.0 if lcs == 0 else 2 * lcs / (len(candidate) + len(reference))  # 2PR/(P+R) = 2 LCS / (m + n)
    assert ours == pytest.approx(textbook, abs=1e-6)


def test_length_mismatch_is_an_error_naming_the_reward():
    with pytest.raises(ValueError, match="rouge_l"):
        RougeLReward()(["a", "b"], [item("r")])


@pytest.mark.parametrize("text", [
    "线粒体是细胞的能量工厂。",                       # Chinese
    "ミトコンドリアは細胞のエネルギー工場です。",       # Japanese
    "Митохондрия — энергетическая станция клетки.",  # Russian
    "Το μιτοχόνδριο παράγει ενέργεια.",              # Greek
    "الميتوكوندريا مصنع الطاقة في الخلية",            # Arabic
])
def test_identical_non_latin_text_scores_one(text):
    assert RougeLReward()([completion(text)], [item(text)]).item() == pytest.approx(1.0, abs=1e-6)


def test_cjk_is_scored_per_character_and_cyrillic_per_word():
    # 我爱北京 vs 我爱上海: LCS = 我爱 = 2 of 4 characters each -> P = R = 1/2 -> F1 = 1/2
    assert RougeLReward().score("我爱北京", ("我爱上海",)) == pytest.approx(0.5, abs=1e-6)
    # кошка сидит на окне vs кошка спит на окне: LCS = кошка на окне = 3 of 4 words -> F1 = 3/4
    assert RougeLReward().score("Кошка сидит на окне", ("кошка спит на окне",)) == pytest.approx(0.75, abs=1e-6)


def test_accented_latin_words_stay_whole():
    # rouge-score reads "perché" as "perch" and drops "è"; here both are words, so "perch" no longer matches.
    assert UnicodeTokenizer().tokenize("Perché è così") == ["perché", "è", "così"]
    assert RougeLReward().score("perché", ("perch",)) == 0.0


_ascii = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " \n\t", max_size=60)


@settings(max_examples=200, deadline=None)
@given(candidate=_ascii, reference=_ascii, use_stemmer=st.booleans())
def test_ascii_text_scores_exactly_as_rouge_score(candidate, reference, use_stemmer):
    ours = RougeLReward(use_stemmer=use_stemmer).score(candidate, (reference,))
    theirs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer).score(reference, candidate)["rougeL"]
    assert ours == (theirs.fmeasure if candidate else 0.0)
    assert UnicodeTokenizer(use_stemmer).tokenize(candidate) == rouge_tokenizers.DefaultTokenizer(
        use_stemmer).tokenize(candidate)
