import pytest
from hypothesis import given, settings, strategies as st

from minigrpo.data.formats import R1_FORMAT, CompletionFormat, ParsedCompletion

FMT = CompletionFormat()


def test_render_layout_is_exact():
    text = FMT.render("  step one  ", "because", "B")
    assert text == ("<reasoning>\nstep one\n</reasoning>\n<explanation>\nbecause\n</explanation>\n"
                    "<answer>B</answer>")


def test_r1_render_leaves_out_the_opening_think_tag():
    text = R1_FORMAT.render("step one", "because", "C")
    assert text == "step one\n</think>\n<explanation>\nbecause\n</explanation>\n<answer>C</answer>"
    # Prompt + completion together carry exactly one opening tag.
    assert ("<think>\n" + text).count("<think>") == 1


def test_parse_of_rendered_text_returns_the_sections():
    parsed = FMT.parse(FMT.render("think hard", "it is B because", "B"))
    assert parsed == ParsedCompletion("think hard", "it is B because", "B", True)


def test_r1_completion_starting_inside_think_block_is_parsed_and_well_formed():
    text = "I compare A and B.\n</think>\n\n<explanation>B is right</explanation>\n<answer>B</answer>\n"
    parsed = R1_FORMAT.parse(text)
    assert parsed == ParsedCompletion("I compare A and B.", "B is right", "B", True)


def test_r1_completion_that_repeats_the_opening_tag_is_still_well_formed():
    parsed = R1_FORMAT.parse("<think>x</think><explanation>e</explanation><answer>A</answer>")
    assert parsed == ParsedCompletion("x", "e", "A", True)


def test_missing_opening_reasoning_tag_is_lenient_but_not_well_formed_by_default():
    parsed = FMT.parse("some reasoning</reasoning><explanation>e</explanation><answer>A</answer>")
    assert parsed.reasoning == "some reasoning"
    assert parsed.well_formed is False


def test_last_answer_tag_wins():
    parsed = FMT.parse("<answer>A</answer> wait, no. <answer>C</answer>")
    assert parsed.answer == "C"
    assert parsed.well_formed is False


def test_unclosed_last_answer_falls_back_to_last_closed_one():
    assert FMT.parse("<answer>A</answer><answer>C").answer == "A"


def test_answer_inside_reasoning_is_a_draft_not_the_answer():
    parsed = FMT.parse("<reasoning>maybe <answer>A</answer></reasoning><explanation>e</explanation>")
    assert parsed.answer is None
    assert parsed.explanation == "e"


def test_unclosed_sections_are_absent():
    parsed = FMT.parse("<reasoning>still thinking when the token budget ran out")
    assert parsed == ParsedCompletion(None, None, None, False)


@pytest.mark.parametrize("text", [
    "<reasoning>r</reasoning><explanation>e</explanation><answer>AB</answer>",            # not one letter
    "<reasoning>r</reasoning><explanation>e</explanation><answer>B)</answer>",            # not a bare letter
    "<reasoning>r</reasoning> hi <explanation>e</explanation><answer>B</answer>",         # text between sections
    "<reasoning>r</reasoning><explanation>e</explanation><answer>B</answer> bye",         # text after the answer
    "hi <reasoning>r</reasoning><explanation>e</explanation><answer>B</answer>",          # text before
    "<reasoning>r</reasoning><answer>B</answer><explanation>e</explanation>",             # wrong order
    "<reasoning>r</reasoning><explanation>e</explanation><answer>B</answer><answer>B</answer>",  # repeated
    "<explanation>e</explanation><answer>B</answer>",                                     # no reasoning
])
def test_not_well_formed(text):
    assert FMT.parse(text).well_formed is False


def test_whitespace_between_sections_and_around_letter_is_allowed():
    text = "\n <reasoning>r</reasoning>\n\n<explanation>e</explanation>  <answer> b </answer>\n"
    parsed = FMT.parse(text)
    assert parsed.well_formed is True and parsed.answer == "b"


def test_empty_sections_are_structurally_well_formed():
    assert FMT.parse("<reasoning></reasoning><explanation></explanation><answer>A</answer>").well_formed


@pytest.mark.parametrize("text, expected", [
    (FMT.render("r", "e", "A"), 3),
    ("<explanation>e</explanation><answer>B</answer>", 2),
    ("<reasoning>r</reasoning><answer>B</answer>", 2),
    ("<answer>B</answer><explanation>e</explanation>", 1),   # explanation after the answer: greedy order scan
    ("no tags at all", 0),
    ("r</reasoning><explanation>e</explanation>", 1),        # reasoning without its opening tag does not count
])
def test_count_sections_in_order(text, expected):
    assert FMT.count_sections(text) == expected


def test_count_sections_accepts_reasoning_opened_in_prompt_for_r1():
    assert R1_FORMAT.count_sections("r</think><explanation>e</explanation><answer>B</answer>") == 3


def test_custom_tags():
    fmt = CompletionFormat(reasoning_tag="ragionamento", explanation_tag="spiegazione", answer_tag="risposta")
    parsed = fmt.parse(fmt.render("r", "e", "D"))
    assert parsed == ParsedCompletion("r", "e", "D", True)
    assert "<spiegazione>" in fmt.instructions() and "<risposta>B</risposta>" in fmt.instructions()


@pytest.mark.parametrize("kwargs", [dict(answer_tag="<answer>"), dict(answer_tag=""), dict(answer_tag="a b"),
                                    dict(explanation_tag="answer")])
def test_bad_tag_names_are_rejected_with_the_field_named(kwargs):
    with pytest.raises(ValueError, match="tag"):
        CompletionFormat(**kwargs)


def test_non_string_input_does_not_raise():
    assert FMT.parse(None) == ParsedCompletion(None, None, None, False)
    assert FMT.count_sections(None) == 0


# Texts that mix the tag strings with arbitrary characters, so the parser sees every tag in every order.
_TAG_PIECES = ["<reasoning>", "</reasoning>", "<explanation>", "</explanation>", "<answer>", "</answer>",
               "<think>", "</think>", "<", ">", "/", "\n", " ", "A", "b"]
_tagged_text = st.lists(st.one_of(st.sampled_from(_TAG_PIECES), st.text(max_size=5)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), _tagged_text))
def test_parse_never_raises_on_arbitrary_text(text):
    for fmt in (FMT, R1_FORMAT):
        parsed = fmt.parse(text)
        assert isinstance(parsed.well_formed, bool)
        assert 0 <= fmt.count_sections(text) <= 3
        if parsed.well_formed:
            assert fmt.count_sections(text) == 3


_plain = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(reasoning=_plain, explanation=_plain, letter=st.sampled_from("ABCDEabcde"))
def test_render_then_parse_round_trip(reasoning, explanation, letter):
    for fmt in (FMT, R1_FORMAT):
        parsed = fmt.parse(fmt.render(reasoning, explanation, letter))
        assert parsed == ParsedCompletion(reasoning.strip(), explanation.strip(), letter, True)


@pytest.mark.parametrize("fmt, text", [
    (FMT, "<reasoning>I think <explanation>e</explanation><answer>A</answer>"),
    (R1_FORMAT, "The answer is probably <explanation>e</explanation><answer>A</answer> but let me check"),
    (R1_FORMAT, "<think>draft: <explanation>e</explanation><answer>A</answer>"),
    (FMT, "<reasoning>r</reasoning><reasoning>again <explanation>e</explanation><answer>C</answer>"),
])
def test_answer_inside_a_reasoning_block_that_never_closes_is_not_graded(fmt, text):
    # A completion cut off by the token budget inside its reasoning has not answered yet.
    parsed = fmt.parse(text)
    assert (parsed.explanation, parsed.answer, parsed.well_formed) == (None, None, False)
    assert fmt.count_sections(text) == (1 if text.startswith("<reasoning>r</reasoning>") else 0)


def test_answer_before_a_reasoning_block_reopened_and_cut_off_still_counts():
    text = "<reasoning>r</reasoning><explanation>e</explanation><answer>B</answer><reasoning>on second thought"
    parsed = FMT.parse(text)
    assert (parsed.explanation, parsed.answer, parsed.well_formed) == ("e", "B", False)


def test_completion_without_any_reasoning_tag_is_searched_whole_when_the_prompt_opened_none():
    parsed = FMT.parse("<explanation>e</explanation><answer>B</answer>")
    assert (parsed.reasoning, parsed.explanation, parsed.answer) == (None, "e", "B")
