import pytest

from minigrpo.data.formats import R1_FORMAT, CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.data.prompts import DEFAULT_SYSTEM_PROMPT, build_messages, format_question, render_prompt, sft_target


class FakeTokenizer:
    """Just enough of a tokenizer for prompt rendering: a fixed, readable chat template."""

    has_chat_template = True

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, add_generation_prompt=False, **kwargs):
        self.calls.append((messages, add_generation_prompt, kwargs))
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


class ListTokenizer(FakeTokenizer):
    def apply_chat_template(self, messages, add_generation_prompt=False, **kwargs):
        return [1, 2, 3]


ITEM = MCQItem("q1", " Which organ pumps blood? ", {"A": "lungs", "B": "heart", "C": "skin"}, "B",
               ("The heart pumps blood.", "Blood is pumped by the heart."), "biology")


def test_format_question_lists_lettered_options_under_the_question():
    assert format_question(ITEM) == "Which organ pumps blood?\nA) lungs\nB) heart\nC) skin"


def test_render_prompt_puts_instructions_in_system_turn_and_ends_with_generation_prompt():
    fmt, tok = CompletionFormat(), FakeTokenizer()
    text = render_prompt(ITEM, tok, fmt)
    system = f"{DEFAULT_SYSTEM_PROMPT}\n\n{fmt.instructions()}"
    assert text == (f"<|system|>{system}<|end|>"
                    "<|user|>Which organ pumps blood?\nA) lungs\nB) heart\nC) skin<|end|><|assistant|>")
    assert tok.calls[0][1] is True


def test_render_prompt_system_in_user_has_one_user_turn_with_the_same_text():
    fmt = CompletionFormat()
    text = render_prompt(ITEM, FakeTokenizer(), fmt, system_prompt="Be brief.", system_in_user=True)
    assert text == (f"<|user|>Be brief.\n\n{fmt.instructions()}\n\n"
                    "Which organ pumps blood?\nA) lungs\nB) heart\nC) skin<|end|><|assistant|>")


def test_empty_system_prompt_leaves_only_the_format_instructions():
    fmt = CompletionFormat()
    messages = build_messages(ITEM, fmt, system_prompt=None)
    assert messages[0] == {"role": "system", "content": fmt.instructions()}
    assert build_messages(ITEM, fmt, system_prompt="")[0]["content"] == fmt.instructions()


def test_render_prompt_rejects_a_template_that_returns_token_ids():
    with pytest.raises(TypeError, match="expected apply_chat_template to return the prompt text"):
        render_prompt(ITEM, ListTokenizer(), CompletionFormat())


def test_sft_target_renders_first_reference_and_gold_letter_and_parses_back():
    fmt = CompletionFormat()
    target = sft_target(ITEM, fmt, reasoning="The heart is the pump.")
    assert target == ("<reasoning>\nThe heart is the pump.\n</reasoning>\n"
                      "<explanation>\nThe heart pumps blood.\n</explanation>\n<answer>B</answer>")
    parsed = fmt.parse(target)
    assert parsed.well_formed and parsed.answer == "B" and parsed.explanation == ITEM.explanations[0]


def test_sft_target_for_r1_format_starts_inside_the_open_think_block():
    target = sft_target(ITEM, R1_FORMAT, "Pump means heart.")
    assert target.startswith("Pump means heart.\n</think>\n")
    assert R1_FORMAT.parse(target).well_formed
