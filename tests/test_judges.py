import pytest
import torch

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.eval.judges import (EncoderCosineJudge, LMPairJudge, ReferenceJudge, fact_score, pair_question, states,
                                  verdict)
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer

POLAND = MCQItem(id="cap", question="What is the capital of Poland?", answer="D", subject="geography",
                 options={"A": "Tokyo", "B": "Madrid", "C": "Rome", "D": "Warsaw"},
                 explanations=("The capital of Poland is Warsaw.",))
SUB = MCQItem(id="sub", question="What is 5 - 3?", options={"A": "2", "B": "4", "C": "3", "D": "0"}, answer="A",
              explanations=("The difference between 5 and 3 is 2.",), subject="arithmetic")


def test_states_matches_whole_words_ignoring_case():
    assert states("The Shark swims.", "shark")
    assert not states("It is 12.", "2") and states("It is 2.", "2")
    assert states("from North  America", "North  America") and not states("Warsawian", "Warsaw")
    assert not states("", "Warsaw") and not states(None, "Warsaw")
    assert states("the group of mammals", "mammal") and states("in seconds", "second") and states("two 4s", "4")


@pytest.mark.parametrize("text, score", [
    ("The capital of Poland is Warsaw.", 1.0),      # g = 1, c = 0
    ("The capital of Poland is Tokyo.", -1.0),      # g = 0, c = 1
    ("Warsaw, not Tokyo or Rome.", -1.0),           # g = 1, c = 2
    ("", 0.0),
    ("Poland is in Europe.", 0.0),
])
def test_fact_score_gold_minus_wrong_options(text, score):
    assert fact_score(text, POLAND) == score


def test_fact_score_key_terms_add_the_fraction_stated():
    assert fact_score("Warsaw is in Poland.", POLAND, ("Poland", "capital")) == 1.5
    assert fact_score("Tokyo", POLAND, ("Poland", "capital")) == -1.0


def test_fact_score_ignores_wrong_options_the_question_names():
    # "3" is a wrong option but a premise of "What is 5 - 3?"
    assert fact_score("The difference between 5 and 3 is 2.", SUB) == 1.0
    assert fact_score("5 minus 3 is 4.", SUB) == -1.0


def test_reference_judge_prefers_the_higher_fact_score_and_ties_equal_ones():
    judge = ReferenceJudge()
    got = judge.compare([POLAND] * 4, ["Warsaw.", "Tokyo.", "Rome.", ""],
                        ["Tokyo.", "Warsaw.", "Madrid.", "Poland is in Europe."])
    assert got == [1.0, 0.0, 0.5, 0.5]
    assert ReferenceJudge({"cap": ["Poland"]}).compare([POLAND], ["Warsaw."], ["Warsaw is in Poland."]) == [0.0]
    assert judge.circular is False


def test_reference_judge_reward_reads_the_explanation_section():
    fmt = CompletionFormat()
    fn = ReferenceJudge().reward(fmt)
    out = fn([fmt.render("Tokyo Rome", "It is Warsaw.", "D"), "no tags at all Warsaw"], [POLAND, POLAND])
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0]))


def test_verdict_margin():
    assert [verdict(1.0, 0.5), verdict(0.5, 1.0), verdict(1.0, 1.0)] == [1.0, 0.0, 0.5]
    assert verdict(1.0, 0.9, margin=0.2) == 0.5 and verdict(1.0, 0.7, margin=0.2) == 1.0


class TableEncoder:
    """embed(texts): unit vectors looked up in a table; counts the texts it embedded."""

    def __init__(self, table):
        self.table, self.seen = table, []

    def embed(self, texts):
        self.seen += list(texts)
        return torch.nn.functional.normalize(torch.tensor([self.table[t] for t in texts], dtype=torch.float32), dim=-1)


def test_encoder_cosine_judge_is_circular_and_compares_cosines():
    ref = POLAND.explanation
    enc = TableEncoder({ref: [1.0, 0.0], "close": [3.0, 1.0], "far": [0.0, 1.0], "opposite": [-1.0, 0.0]})
    judge = EncoderCosineJudge(enc)
    assert judge.circular is True and "circular" in judge.name
    # cosines to the reference: close 3 / sqrt(10) = 0.949, far 0, opposite -1, empty -1 (not embedded)
    assert judge.compare([POLAND] * 4, ["close", "far", "opposite", ""], ["far", "close", "", "opposite"]) \
        == [1.0, 0.0, 0.5, 0.5]
    assert "" not in enc.seen
    assert sorted(enc.seen) == sorted({ref, "close", "far", "opposite"})  # each distinct text embedded once
    assert EncoderCosineJudge(enc, margin=1.0).compare([POLAND], ["close"], ["far"]) == [0.5]


# ---- the causal-LM judge on a tiny random checkpoint ---------------------------------------------------------

PAIRS = [(POLAND, "The capital of Poland is Warsaw.", "It is Tokyo."),
         (POLAND, "Warsaw.", "Madrid is the capital of Poland, a country in Europe with a long history."),
         (SUB, "5 minus 3 is 2.", "4"),
         (SUB, "", "The difference between 5 and 3 is 2, as counting down three steps from five shows."),
         (POLAND, "Rome.", "Rome.")]


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory):
    """arch -> (model, tokenizer): tiny random Llama (R1-style chat template) and Qwen3 (ChatML) checkpoints."""
    out = {}
    for arch in ("llama", "qwen3"):
        path = make_tiny_checkpoint(tmp_path_factory.mktemp(arch), arch=arch, seed=3)
        out[arch] = load_causal_lm(path), load_tokenizer(path)
    return out


@pytest.fixture
def tiny_lm(tiny_lms):
    return tiny_lms["llama"]


def _direct_logprobs(lm, tok, prompt, letters, add_special_tokens):
    """log p(letter | prompt) from the full logits of ONE unpadded sequence."""
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=add_special_tokens)])  # (1, T)
    with torch.no_grad():
        logits = lm(ids)                                                              # (1, T, V)
    logp = torch.log_softmax(logits[0, -1].double(), dim=-1)
    return [logp[tok.encode(letter, add_special_tokens=False)[0]].item() for letter in letters]


@pytest.mark.parametrize("arch, chat", [("llama", True), ("qwen3", True), ("llama", False)])
def test_lm_pair_judge_logprobs_match_a_direct_computation(tiny_lms, arch, chat):
    lm, tok = tiny_lms[arch]
    judge = LMPairJudge(lm, tok, use_chat_template=chat, batch_size=2)  # 5 prompts of different lengths: padding
    items, firsts, seconds = map(list, zip(*PAIRS))
    got = judge.logprobs(items, firsts, seconds)  # (5, 2)
    letters = ("A", "B") if chat else (" A", " B")
    for n, (item, a, b) in enumerate(PAIRS):
        prompt = judge.prompt(item, a, b)
        expected = _direct_logprobs(lm, tok, prompt, letters, add_special_tokens=not chat)
        assert got[n].tolist() == pytest.approx(expected, abs=2e-6)  # measured 4.8e-7: float32 padding
    assert judge.compare(items, firsts, seconds) == [1.0 if x > y else 0.0 if y > x else 0.5 for x, y in got.tolist()]
    assert judge.compare(items, firsts, seconds) == judge.compare(items, firsts, seconds)  # deterministic


def test_lm_pair_judge_prompt_holds_everything_the_judge_needs(tiny_lms):
    lm, tok = tiny_lms["llama"]
    prompt = LMPairJudge(lm, tok).prompt(POLAND, "first text", "second text")
    for part in (pair_question(POLAND), "Correct answer: D) Warsaw", POLAND.explanation,
                 "Explanation A:\nfirst text", "Explanation B:\nsecond text"):
        assert part in prompt
    assert pair_question(POLAND) == "What is the capital of Poland?\nA) Tokyo\nB) Madrid\nC) Rome\nD) Warsaw"
    # the tiny Llama's R1-style template opens <think> in the generation prompt: the judge answers after closing it
    assert prompt.endswith("<｜Assistant｜><think>\n</think>\n\n")
    assert LMPairJudge(*tiny_lms["qwen3"]).prompt(POLAND, "a", "b").endswith("<|im_start|>assistant\n")
    assert LMPairJudge(lm, tok, answer_prefix="Better: ").prompt(POLAND, "a", "b").endswith("<think>\nBetter: ")
    plain = LMPairJudge(lm, tok, use_chat_template=False).prompt(POLAND, "a", "b")
    assert plain.endswith("A or B.\nAnswer:")


def test_lm_pair_judge_margin_turns_close_calls_into_ties(tiny_lm):
    lm, tok = tiny_lm
    items, firsts, seconds = map(list, zip(*PAIRS))
    gaps = (LMPairJudge(lm, tok).logprobs(items, firsts, seconds) @ torch.tensor([1.0, -1.0])).abs()  # (5,)
    margin = float(gaps.median())
    got = LMPairJudge(lm, tok, margin=margin).compare(items, firsts, seconds)
    assert [g == 0.5 for g in got] == (gaps <= margin).tolist()


def test_lm_pair_judge_needs_single_token_letters(tiny_lm):
    lm, tok = tiny_lm

    class SplitLetters:
        has_chat_template = False

        def encode(self, text, add_special_tokens=True):
            return [1, 2]

    with pytest.raises(ValueError, match="encodes to 2 tokens"):
        LMPairJudge(lm, SplitLetters())
