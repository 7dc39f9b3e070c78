"""The completion format: reasoning, then an explanation, then the answer letter, each inside its own tags.

The policy is asked to answer a multiple-choice question as

    <reasoning>
    ...step-by-step working...
    </reasoning>
    <explanation>
    ...an explanation of the correct option, written for a student...
    </explanation>
    <answer>B</answer>

Every reward reads the completion through `CompletionFormat.parse`: the semantic and ROUGE rewards score the
explanation, correctness reads the answer, the CoT reward counts the words of the reasoning, and the format reward
checks `well_formed`. SFT targets are written with `CompletionFormat.render`, so SFT teaches exactly the layout
that GRPO rewards.

DeepSeek-R1-style models reason inside <think>...</think>, and their chat template's generation prompt already
ends with "<think>\\n": the completion then starts INSIDE the reasoning block and has no opening tag. `R1_FORMAT`
sets `reasoning_opened_in_prompt=True` for this case:
  - `render` leaves out the opening reasoning tag (the prompt supplies it);
  - a well-formed completion may start with the opening tag or without it (older R1 templates end the prompt at
    the assistant marker, and the model then writes "<think>" itself).
Parsing is lenient in both modes: when the closing reasoning tag has no opening tag before it, all the text before
the closing tag is the reasoning. Only `well_formed` depends on the flag.

Parsing rules (they never raise, whatever the text):
  - a section exists only once it is closed; its content is stripped of surrounding whitespace;
  - reasoning ends at the FIRST closing reasoning tag and starts after the last opening tag before it (or at the
    start of the text);
  - explanation and answer are searched only after the end of the reasoning (when there is one), so a draft
    answer written inside the reasoning is not the answer;
  - nor inside a reasoning block that never closes: text from an opening reasoning tag with no closing tag after
    it (with `reasoning_opened_in_prompt`, the whole completion when it has no closing tag at all) is reasoning
    cut off by the token budget, and a grader takes the answer only after the reasoning has closed. A completion
    with no reasoning tag at all (and a prompt that opened none) is searched whole;
  - when a tag pair occurs several times, the LAST closed block wins (a model that corrects itself is graded on
    its final answer);
  - `well_formed` means exactly one block of each section, in order, nothing but whitespace outside the blocks,
    and an answer that is a single ASCII letter. It checks structure only: an empty section is still a section,
    and whether the letter is one of the item's options is for the caller to check (the parser never sees the
    item; `rewards.answer.FormatReward` does check it).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ParsedCompletion:
    """The sections of one completion; None where the section is absent or never closed."""

    reasoning: str | None
    explanation: str | None
    answer: str | None
    well_formed: bool


@dataclass(frozen=True)
class CompletionFormat:
    """Tag names of the three sections, and whether the prompt already opened the reasoning block.

    Args:
        reasoning_tag: name of the reasoning tag, written <name>...</name>.
        explanation_tag: name of the explanation tag.
        answer_tag: name of the answer tag; its content is one option letter.
        reasoning_opened_in_prompt: True when the generation prompt ends with the opening reasoning tag
            (DeepSeek-R1 templates end with "<think>\\n"): `render` omits that tag and a completion without it
            is still well formed.
    """

    reasoning_tag: str = "reasoning"
    explanation_tag: str = "explanation"
    answer_tag: str = "answer"
    reasoning_opened_in_prompt: bool = False

    def __post_init__(self):
        tags = (self.reasoning_tag, self.explanation_tag, self.answer_tag)
        for field_name, tag in zip(("reasoning_tag", "explanation_tag", "answer_tag"), tags):
            if not isinstance(tag, str) or not tag or any(ch in tag for ch in "<>/") or tag != tag.strip() \
                    or any(ch.isspace() for ch in tag):
                raise ValueError(f"CompletionFormat.{field_name}: expected a tag name such as 'answer' (no <, >, / "
                                 f"or whitespace), found {tag!r}")
        if len(set(tags)) != 3:
            raise ValueError(f"CompletionFormat: the three tag names must differ, found {tags}")

    # ---- tags -------------------------------------------------------------------------------------------------

    @staticmethod
    def _open(tag):
        return f"<{tag}>"

    @staticmethod
    def _close(tag):
        return f"</{tag}>"

    # ---- writing ----------------------------------------------------------------------------------------------

    def render(self, reasoning, explanation, answer):
        """The completion text for the three sections.

        Layout (each section's tags on their own lines, the answer inline, a single newline between sections,
        no trailing newline):

            <reasoning>\\n{reasoning}\\n</reasoning>\\n
            <explanation>\\n{explanation}\\n</explanation>\\n
            <answer>{answer}</answer>

        (shown on three lines; the text is one string, the sections joined by the "\\n" at each line's end).

        With reasoning_opened_in_prompt the leading "<reasoning>\\n" is left out, because the prompt ends with it.
        The inputs are stripped, so parse(render(r, e, a)) gives back r.strip(), e.strip(), a.strip() whenever
        none of them contains a tag.
        """
        r, e, a = (str(s).strip() for s in (reasoning, explanation, answer))
        head = "" if self.reasoning_opened_in_prompt else self._open(self.reasoning_tag) + "\n"
        return (f"{head}{r}\n{self._close(self.reasoning_tag)}\n"
                f"{self._open(self.explanation_tag)}\n{e}\n{self._close(self.explanation_tag)}\n"
                f"{self._open(self.answer_tag)}{a}{self._close(self.answer_tag)}")

    def instructions(self):
        """One paragraph telling the model the format (for the system or user prompt)."""
        r_open, r_close = self._open(self.reasoning_tag), self._close(self.reasoning_tag)
        e_open, e_close = self._open(self.explanation_tag), self._close(self.explanation_tag)
        a_open, a_close = self._open(self.answer_tag), self._close(self.answer_tag)
        return (f"Reply in three parts and write nothing outside them. First reason step by step inside "
                f"{r_open} and {r_close}. Then, inside {e_open} and {e_close}, explain to a student why the "
                f"correct option is correct and why the others are not. Finally write only the letter of the "
                f"correct option inside {a_open} and {a_close}, for example {a_open}B{a_close}.")

    # ---- reading ----------------------------------------------------------------------------------------------

    @staticmethod
    def _last_block(text, open_tag, close_tag, start, end):
        """(content, begin, end) of the last block closed inside text[start:end], or None.

        The block opens at the last opening tag that lies before the last closing tag, and ends at the first
        closing tag after it: "<a>x<a>y</a>" gives "y", "<a>x</a></a>" gives "x", "<a>x</a><a>y" gives "x".
        begin and end are the index of the opening tag and the index just past the closing tag.
        """
        last_close = text.rfind(close_tag, start, end)
        if last_close < 0:
            return None
        begin = text.rfind(open_tag, start, last_close)
        if begin < 0:
            return None
        close = text.find(close_tag, begin + len(open_tag))
        return text[begin + len(open_tag):close], begin, close + len(close_tag)

    def _reasoning_block(self, text):
        """(content, begin, end) of the reasoning: up to the first closing tag; begin is -1 without an opening tag."""
        close_tag = self._close(self.reasoning_tag)
        close = text.find(close_tag)
        if close < 0:
            return None
        begin = text.rfind(self._open(self.reasoning_tag), 0, close)
        content_start = 0 if begin < 0 else begin + len(self._open(self.reasoning_tag))
        return text[content_start:close], begin, close + len(close_tag)

    def _graded_span(self, text, reasoning):
        """(start, end): where explanation and answer are looked for. After the closed reasoning block, and before
        the first opening reasoning tag that no closing tag follows (reasoning cut off by the token budget)."""
        if reasoning is None and self.reasoning_opened_in_prompt:
            return 0, 0  # the prompt opened the reasoning and the completion never closed it: all of it is reasoning
        r_open, r_close = self._open(self.reasoning_tag), self._close(self.reasoning_tag)
        start = reasoning[2] if reasoning is not None else 0
        last_close = text.rfind(r_close)
        unclosed = text.find(r_open, max(start, last_close + len(r_close) if last_close >= 0 else 0))
        return start, len(text) if unclosed < 0 else unclosed

    def parse(self, text):
        """Split a completion into its sections (see the module docstring for the rules). Never raises."""
        if not isinstance(text, str):
            return ParsedCompletion(None, None, None, False)
        reasoning = self._reasoning_block(text)
        start, end = self._graded_span(text, reasoning)
        explanation = self._last_block(text, self._open(self.explanation_tag), self._close(self.explanation_tag),
                                       start, end)
        answer = self._last_block(text, self._open(self.answer_tag), self._close(self.answer_tag), start, end)
        return ParsedCompletion(
            reasoning=None if reasoning is None else reasoning[0].strip(),
            explanation=None if explanation is None else explanation[0].strip(),
            answer=None if answer is None else answer[0].strip(),
            well_formed=self._well_formed(text),
        )

    def _well_formed(self, text):
        """Exactly one block per section, in order, only whitespace outside, a single-letter answer."""
        r_open, r_close = self._open(self.reasoning_tag), self._close(self.reasoning_tag)
        e_open, e_close = self._open(self.explanation_tag), self._close(self.explanation_tag)
        a_open, a_close = self._open(self.answer_tag), self._close(self.answer_tag)
        for tag in (r_close, e_open, e_close, a_open, a_close):
            if text.count(tag) != 1:
                return False
        n_r_open = text.count(r_open)
        if n_r_open > 1 or (n_r_open == 0 and not self.reasoning_opened_in_prompt):
            return False
        # Without an opening tag the reasoning starts at the first character, so nothing lies before it.
        r_begin = text.find(r_open) if n_r_open else 0
        points = [r_begin, text.find(r_close), text.find(e_open), text.find(e_close), text.find(a_open),
                  text.find(a_close)]
        if points != sorted(points):
            return False
        outside = (text[:r_begin],
                   text[points[1] + len(r_close):points[2]],
                   text[points[3] + len(e_close):points[4]],
                   text[points[5] + len(a_close):])
        if any(part.strip() for part in outside):
            return False
        letter = text[points[4] + len(a_open):points[5]].strip()
        return len(letter) == 1 and letter.isascii() and letter.isalpha()

    def count_sections(self, text):
        """How many of the three sections appear as closed blocks in order (0..3): the partial format credit.

        Greedy scan from the left: each section's first closed block that starts after the end of the previous
        found section counts; a missing section is skipped, so "<explanation>x</explanation><answer>B</answer>"
        counts 2. With reasoning_opened_in_prompt a reasoning block may lack its opening tag. Sections inside a
        reasoning block that never closes are not counted (module docstring).
        """
        if not isinstance(text, str):
            return 0
        count = 0
        reasoning = self._reasoning_block(text)
        if reasoning is not None and (reasoning[1] >= 0 or self.reasoning_opened_in_prompt):
            count = 1
        pos, end = self._graded_span(text, reasoning)  # sections inside unclosed reasoning do not count
        for tag in (self.explanation_tag, self.answer_tag):
            begin = text.find(self._open(tag), pos, end)
            close = text.find(self._close(tag), begin + len(self._open(tag)), end) if begin >= 0 else -1
            if close >= 0:
                count, pos = count + 1, close + len(self._close(tag))
        return count


R1_FORMAT = CompletionFormat(reasoning_tag="think", reasoning_opened_in_prompt=True)
"""DeepSeek-R1 style: reasoning in <think>...</think>, opened by the chat template's generation prompt."""
