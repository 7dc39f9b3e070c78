import pytest
import torch

from minigrpo.data.formats import R1_FORMAT, CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.rewards.answer import CorrectnessReward, CoTReward, FormatReward, answer_letter

FMT = CompletionFormat()
ITEM = MCQItem(id="q1", question="2 + 2?", options={"A": "3", "B": "4", "C": "5"}, answer="B",
               explanations=("2 + 2 = 4.",))


def with_answer(answer, fmt=FMT):
    return fmt.render("one two three four five", "because", answer)


@pytest.mark.parametrize("answer", ["B", "b", " B ", "B)", "(B)", "B.", "b:", "( b )"])
def test_answer_letter_accepts_common_forms(answer):
    assert answer_letter(answer) == "B"


@pytest.mark.parametrize("answer", ["", "BC", "B and C", "4", "Paris", None, "B) 4"])
def test_answer_letter_rejects_anything_else(answer):
    assert answer_letter(answer) is None


def test_correctness_is_one_for_the_gold_letter_in_any_accepted_form():
    reward = CorrectnessReward()
    completions = [with_answer(a) for a in ["B", "b", "(B)", "B)", "B.", "A", "C", "B and C"]]
    out = reward(completions, [ITEM] * len(completions))
    assert out.dtype == torch.float32
    assert out.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert reward.name == "correctness"


def test_correctness_last_answer_tag_wins():
    reward = CorrectnessReward()
    out = reward(["<answer>B</answer> hmm, no: <answer>C</answer>", "<answer>C</answer> no: <answer>B</answer>"],
                 [ITEM, ITEM])
    assert out.tolist() == [0.0, 1.0]


def test_correctness_without_answer_is_zero():
    assert CorrectnessReward()(["the answer is B", "<answer>B"], [ITEM, ITEM]).tolist() == [0.0, 0.0]


def test_correctness_with_r1_format():
    assert CorrectnessReward(fmt=R1_FORMAT)([with_answer("B", R1_FORMAT)], [ITEM]).tolist() == [1.0]


def test_format_exact_rewards_only_the_exact_structure():
    reward = FormatReward()
    completions = [
        with_answer("B"),                                                  # exact
        with_answer("B") + "\n\n",                                         # trailing whitespace is fine
        with_answer("(B)"),                                                # answer not a bare letter
        with_answer("B") + " extra",                                       # text after the answer
        "<explanation>e</explanation><answer>B</answer>",                  # no reasoning
    ]
    assert reward(completions, [ITEM] * 5).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert reward.name == "format"


def test_format_partial_gives_a_third_per_section_in_order():
    reward = FormatReward(partial=True)
    completions = [
        with_answer("B"),
        "<reasoning>r</reasoning><explanation>e</explanation>",
        "<explanation>e</explanation>",
        "<answer>B</answer><explanation>e</explanation>",      # explanation after the answer is out of order
        "nothing",
    ]
    torch.testing.assert_close(reward(completions, [ITEM] * 5), torch.tensor([1.0, 2 / 3, 1 / 3, 1 / 3, 0.0]))


def test_cot_threshold_counts_words_of_the_reasoning():
    reward = CoTReward(min_words=5)
    completions = [FMT.render("one two three four", "e", "B"),        # 4 words
                   FMT.render("one two three four five", "e", "B"),   # 5 words
                   "<reasoning>one two three four five six",          # never closed
                   "no reasoning at all"]
    assert reward(completions, [ITEM] * 4).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert reward.name == "cot"


def test_cot_threshold_is_configurable():
    text = [FMT.render("one two", "e", "B")]
    assert CoTReward(min_words=2)(text, [ITEM]).tolist() == [1.0]
    assert CoTReward(min_words=3)(text, [ITEM]).tolist() == [0.0]


def test_cot_counts_r1_reasoning_opened_in_the_prompt():
    text = ["one two three four five\n</think>\n<explanation>e</explanation>\n<answer>B</answer>"]
    assert CoTReward(fmt=R1_FORMAT)(text, [ITEM]).tolist() == [1.0]


@pytest.mark.parametrize("reward", [CorrectnessReward(), FormatReward(), CoTReward()])
def test_length_mismatch_is_an_error_naming_the_reward(reward):
    with pytest.raises(ValueError, match=reward.name):
        reward(["a", "b"], [ITEM])


def test_negative_min_words_is_rejected():
    with pytest.raises(ValueError, match="min_words"):
        CoTReward(min_words=-1)


@pytest.mark.parametrize("answer", ["(B", "( b", "(B.", "(B:"])
def test_answer_letter_rejects_a_parenthesis_left_open(answer):
    assert answer_letter(answer) is None


def test_correctness_is_zero_for_an_answer_inside_r1_reasoning_cut_off_by_the_budget():
    cut_off = "Let me see. 2 + 2 = 4, so <explanation>4</explanation><answer>B</answer> - wait, let me"
    closed = cut_off.replace(" - wait, let me", "").replace("so <explanation>", "so</think><explanation>")
    out = CorrectnessReward(fmt=R1_FORMAT)([cut_off, closed], [ITEM, ITEM])
    assert out.tolist() == [0.0, 1.0]


def test_format_is_zero_for_a_letter_outside_the_items_options():
    # ITEM has options A, B, C: "D" and "Z" do not name an option; the case of a real option does not matter.
    completions = [with_answer(a) for a in ["D", "Z", "c", "C"]]
    out = FormatReward()(completions, [ITEM] * len(completions))
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0]
