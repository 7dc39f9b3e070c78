"""An LLM judge as a reward: a language model grades each generated explanation against the reference.

The judge protocol is any callable

    judge(questions: list[str], completions: list[str], references: list[str]) -> list[float | None]

returning one grade per completion, or None where it gave no usable grade (an API error, an answer that is not a
grade). `LMJudge` is the local implementation: it asks a causal LM (from minigrpo.models.load_causal_lm) for a
grade from 1 to 10 with greedy decoding and parses the reply. An external judge (a hosted model, a human
annotation file) only has to follow the same protocol.

`JudgeReward` turns a judge into a batched reward function:

    R_i = grade_i / max_score        (grades 1..10 -> 0.1..1.0)
    R_i = failure_score              where the judge returned None (counted in `failures`)
    R_i = 0                          where the completion has no explanation (the judge is not asked)

so the reward is never NaN whatever the judge does.
"""

import math
import re

import torch

from minigrpo.data.formats import CompletionFormat

DEFAULT_JUDGE_PROMPT = (
    "You are grading a student's explanation of a multiple-choice question.\n\n"
    "Question:\n{question}\n\n"
    "Reference explanation written by a teacher:\n{reference}\n\n"
    "Student's explanation:\n{completion}\n\n"
    "How correct, complete and clear is the student's explanation compared with the reference? "
    "Reply with a single integer grade from 1 (useless) to 10 (as good as the reference) and nothing else."
)

# A number: digits with an optional decimal point or comma ("7,5"), not glued to a word or another number.
_NUM = r"(?<![\w.,])(\d+(?:[.,]\d+)?)(?![\w]|[.,]\d)"
# "7/10", "7 out of 10", "7 over 10": a grade with its denominator.
_FRACTION = re.compile(_NUM + r"\s*(?:/|\bout\s+of\b|\bover\b)\s*" + _NUM)
# "1 to 10", "1-10", "1 – 10", "between 1 and 10": the scale, never the grade.
_RANGE = re.compile(_NUM + r"\s*(?:-|\u2013|\u2014|\bto\b)\s*" + _NUM
                    + r"|\bbetween\s+" + _NUM + r"\s+and\s+" + _NUM, re.IGNORECASE)
# "grade: 7", "score of 8", "I give it an 8", "I'd rate it 6", "voto 7": a number the reply names as the grade.
_MARKED = re.compile(r"\b(?:grade[ds]?|scores?|scored|rating|rated?|marks?|give|gave|assign(?:ed)?|award(?:ed)?|"
                     r"voto|punteggio|valutazione)\b(?:\W+(?:it|this|the|an?|of|as|is|be|would|explanation|answer|"
                     r"student)\b)*\W*" + _NUM, re.IGNORECASE)
_NUMBER = re.compile(_NUM)


def _number(text):
    return float(text.replace(",", "."))


def parse_grade(text, low=1.0, high=10.0):
    """The grade in a judge's reply, or None when there is none. Parses the grade, not the scale.

    Rules, in order:
      1. text up to the last "</think>" is dropped (a reasoning model's thoughts are not its answer), and a
         "<think>" never closed is no grade;
      2. a grade written with its denominator ("7/10", "7 out of 10") wins; the last one counts. Its denominator
         must equal `high`: "4/5" is a different scale, so no grade;
      3. otherwise the scale is removed first ("1 to 10", "1-10", "between 1 and 10", and any "out of 10" or
         "/10" left over), so "on a scale of 1 to 10, I give it an 8" reads 8, not 1;
      4. of what is left, the last number the reply marks as the grade ("grade: 7", "score of 8", "I give it an
         8", "voto 7") wins; without such a marker, the last number of the reply (judges conclude with it);
      5. the grade must lie in [low, high].
    "8" -> 8.0, "Grade: 7/10" -> 7.0, "7,5" -> 7.5, "excellent" -> None, "11" -> None, "on a scale of 1 to 10"
    -> None.
    """
    if not isinstance(text, str):
        return None
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None  # still thinking when the token budget ran out
    fractions = _FRACTION.findall(text)
    if fractions:
        matching = [grade for grade, denominator in fractions if _number(denominator) == high]
        grade = _number(matching[-1]) if matching else None
    else:
        text = _RANGE.sub(" ", text)
        text = re.sub(r"(?:/|\bout\s+of\b)\s*" + _NUM, " ", text, flags=re.IGNORECASE)
        marked = _MARKED.findall(text)
        numbers = marked or _NUMBER.findall(text)
        grade = _number(numbers[-1]) if numbers else None
    return grade if grade is not None and low <= grade <= high else None


def judge_question(item):
    """The question as the judge reads it: stem, lettered options, and the correct letter."""
    lines = [item.question]
    lines += [f"{letter}) {text}" for letter, text in sorted(dict(item.options or {}).items())]
    lines.append(f"Correct answer: {item.answer}")
    return "\n".join(lines)


class LMJudge:
    """A local causal LM as judge: one greedy generation per completion, parsed with `parse_grade`.

    Args:
        model: a causal LM (minigrpo.models.CausalLM) in eval mode; never trained here.
        tokenizer: its minigrpo Tokenizer.
        prompt_template: str.format template with {question}, {reference} and {completion}.
        max_new_tokens: reply budget; a reasoning model needs room to close its </think> block.
        batch_size: prompts per generate call.
        low, high: the grade range asked for; replies outside it are failures.
        use_chat_template: wrap the prompt as a user turn with the tokenizer's chat template when it has one.
        generate_fn: the sampler, `minigrpo.generation.generate` when None (imported on first use).

    Greedy decoding is asked for as top_k=1, which is argmax whatever the temperature.
    Attributes `calls` and `failures` count graded completions and replies without a usable grade;
    `last_replies` keeps the raw replies of the last call.
    """

    def __init__(self, model, tokenizer, *, prompt_template=DEFAULT_JUDGE_PROMPT, max_new_tokens=8, batch_size=8,
                 low=1.0, high=10.0, use_chat_template=True, generate_fn=None):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.low, self.high = low, high
        self.use_chat_template = use_chat_template
        self.generate_fn = generate_fn
        self.calls = 0
        self.failures = 0
        self.last_replies = []

    def _prompts(self, questions, completions, references):
        texts = [self.prompt_template.format(question=q, reference=r, completion=c)
                 for q, c, r in zip(questions, completions, references)]
        if self.use_chat_template and getattr(self.tokenizer, "has_chat_template", False):
            # The template writes BOS itself, so the tokenizer must not add another.
            return [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True)
                    for t in texts], False
        return texts, True

    @torch.no_grad()
    def __call__(self, questions, completions, references):
        if not len(questions) == len(completions) == len(references):
            raise ValueError(f"LMJudge: expected as many questions, completions and references, found "
                             f"{len(questions)}, {len(completions)} and {len(references)}")
        generate = self.generate_fn
        if generate is None:
            from minigrpo.generation import generate
        prompts, add_special_tokens = self._prompts(questions, completions, references)
        try:
            device = next(self.model.parameters()).device
        except (AttributeError, StopIteration):
            device = torch.device("cpu")
        pad_id = self.tokenizer.pad_token_id
        replies = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = self.tokenizer.batch_encode(prompts[start:start + self.batch_size], padding_side="left",
                                                    add_special_tokens=add_special_tokens)  # (B, T) each
            out = generate(self.model, ids.to(device), mask.to(device), max_new_tokens=self.max_new_tokens,
                           top_k=1, eos_token_id=self.tokenizer.eos_token_id,
                           pad_token_id=0 if pad_id is None else pad_id)
            for row_ids, row_mask in zip(out.completion_ids.cpu(), out.completion_mask.cpu()):  # (N,) each
                replies.append(self.tokenizer.decode(row_ids[row_mask.bool()].tolist(), skip_special_tokens=True))
        grades = [parse_grade(reply, self.low, self.high) for reply in replies]
        self.calls += len(grades)
        self.failures += sum(g is None for g in grades)
        self.last_replies = replies
        return grades


class JudgeReward:
    """Batched reward from a judge: `reward(completions, items) -> (N,) float32` (formula in the module docstring).

    Args:
        judge: callable following the judge protocol.
        fmt: the completion format; the judge sees the explanation section only, with the question
            (`judge_question`) and the item's first reference explanation.
        max_score: the judge's top grade; grades are divided by it.
        failure_score: reward where the judge returned None (in reward units, after the division).
        name: key of this reward in logs and in the reward breakdown.
    """

    def __init__(self, judge, fmt=CompletionFormat(), max_score=10.0, failure_score=0.0, name="judge"):
        self.judge = judge
        self.fmt = fmt
        self.max_score = float(max_score)
        self.failure_score = float(failure_score)
        self.name = name
        self.failures = 0

    def __call__(self, completions, items):
        if len(completions) != len(items):
            raise ValueError(f"{self.name} reward: expected one item per completion, found {len(completions)} "
                             f"completions and {len(items)} items")
        rewards = torch.zeros(len(completions), dtype=torch.float32)  # (N,)
        explanations = [self.fmt.parse(text).explanation for text in completions]
        rows = [i for i, e in enumerate(explanations) if e]
        if not rows:
            return rewards
        grades = self.judge([judge_question(items[i]) for i in rows], [explanations[i] for i in rows],
                            [(tuple(items[i].explanations or ()) or ("",))[0] for i in rows])
        if len(grades) != len(rows):
            raise ValueError(f"{self.name} reward: the judge {type(self.judge).__name__} returned {len(grades)} "
                             f"grades for {len(rows)} completions")
        for i, grade in zip(rows, grades):
            if grade is None or not math.isfinite(float(grade)):
                self.failures += 1
                rewards[i] = self.failure_score
            else:
                rewards[i] = float(grade) / self.max_score
        return rewards
