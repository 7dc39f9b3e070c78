"""Multiple-choice items: the record every stage passes around, and its JSONL file format.

One item per line, a JSON object with

    id           unique string
    question     the question text
    options      {"A": "...", "B": "...", ...}  or  ["...", "...", ...] (mapped to A, B, ... in order)
    answer       the letter of the correct option
    explanation  the tutor's explanation of the answer: a string, or a list of strings when several
                 reference explanations exist ("explanations" is accepted as the key too)
    subject      optional string

Options use consecutive letters from A (2 to 5 of them). Blank lines are skipped; other fields are ignored.
The file is UTF-8. A malformed line (bytes that are not UTF-8, invalid JSON, a missing field, a value of the wrong
type) raises ValueError naming the file, the line number, what was expected and what was found.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

LETTERS = "ABCDE"
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)


@dataclass(frozen=True)
class MCQItem:
    """One multiple-choice question with its gold letter and reference explanation(s).

    Args:
        id: unique identifier within a dataset.
        question: the question text, without the options.
        options: letter -> option text, letters consecutive from "A" (2 to 5 options).
        answer: the letter of the correct option; a key of `options`.
        explanations: one or more reference explanations of the answer; the first is the SFT target and the
            semantic reward compares against all of them.
        subject: optional subject label, used to break results down.

    Items are hashable (by every field except `options`, a dict), so they can key caches.
    """

    id: str
    question: str
    options: dict = field(hash=False)
    answer: str
    explanations: tuple
    subject: str | None = None

    def __post_init__(self):
        for name in ("id", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: expected a non-empty string, found {value!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options: expected a dict letter -> text, found {type(self.options).__name__}")
        letters = list(self.options)
        expected = list(LETTERS[:len(letters)])
        if not MIN_OPTIONS <= len(letters) <= MAX_OPTIONS or letters != expected:
            raise ValueError(f"options: expected {MIN_OPTIONS} to {MAX_OPTIONS} options lettered consecutively "
                             f"from A (A, B, ...), found letters {letters}")
        for letter, text in self.options.items():
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"options[{letter!r}]: expected a non-empty string, found {text!r}")
        if not isinstance(self.answer, str):  # checked first: a list is not even hashable, so `in` would raise
            raise ValueError(f"answer: expected one option letter as a string ({', '.join(letters)}), found "
                             f"{type(self.answer).__name__} {self.answer!r}")
        if self.answer not in self.options:
            raise ValueError(f"answer: expected one of {', '.join(letters)}, found {self.answer!r}")
        explanations = self.explanations
        if isinstance(explanations, str):
            explanations = (explanations,)
        if not isinstance(explanations, (list, tuple)) or not explanations:
            raise ValueError(f"explanations: expected a non-empty string or list of strings, found {explanations!r}")
        for i, text in enumerate(explanations):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"explanations[{i}]: expected a non-empty string, found {text!r}")
        # Frozen dataclass: normalise the field in place so that a list or a bare string never leaks out.
        object.__setattr__(self, "explanations", tuple(explanations))
        if self.subject is not None and not isinstance(self.subject, str):
            raise ValueError(f"subject: expected a string or null, found {self.subject!r}")

    @property
    def explanation(self):
        """The first reference explanation (the SFT target)."""
        return self.explanations[0]

    @property
    def answer_text(self):
        """The text of the correct option."""
        return self.options[self.answer]

    def to_dict(self):
        """The JSON object of one JSONL line; a single explanation is written as a string."""
        row = {"id": self.id, "question": self.question, "options": dict(self.options), "answer": self.answer,
               "explanation": self.explanations[0] if len(self.explanations) == 1 else list(self.explanations)}
        if self.subject is not None:
            row["subject"] = self.subject
        return row

    @classmethod
    def from_dict(cls, row):
        """Build an item from one parsed JSONL object; ValueError says which field is wrong and how."""
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, found {type(row).__name__}")
        missing = [k for k in ("id", "question", "options", "answer") if k not in row]
        if "explanation" not in row and "explanations" not in row:
            missing.append("explanation")
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}; found fields {sorted(row)}")
        if "explanation" in row and "explanations" in row:
            raise ValueError("expected one of 'explanation' or 'explanations', found both")
        options = row["options"]
        if isinstance(options, list):
            if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
                raise ValueError(f"options: expected a list of {MIN_OPTIONS} to {MAX_OPTIONS} strings, "
                                 f"found {len(options)}")
            options = dict(zip(LETTERS, options))
        elif not isinstance(options, dict):
            raise ValueError(f"options: expected an object letter -> text or a list, found {options!r}")
        explanations = row.get("explanation", row.get("explanations"))
        return cls(id=row["id"], question=row["question"], options=dict(options), answer=row["answer"],
                   explanations=explanations, subject=row.get("subject"))


def load_mcq_jsonl(path):
    """Read MCQ items from a JSONL file; ValueError "<path>:<line>: ..." on the first malformed line."""
    path = Path(path)
    items, seen = [], {}
    with path.open("rb") as f:  # bytes, so that text which is not UTF-8 is reported with its line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: expected UTF-8 text, found byte 0x{raw[e.start]:02x} at column "
                                 f"{e.start + 1} (a file saved in another encoding, e.g. Latin-1?)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: expected a JSON object, found invalid JSON ({e.msg} at "
                                 f"column {e.colno})") from None
            try:
                item = MCQItem.from_dict(row)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if item.id in seen:
                raise ValueError(f"{path}:{lineno}: expected a unique id, found {item.id!r} already used on line "
                                 f"{seen[item.id]}")
            seen[item.id] = lineno
            items.append(item)
    return items


def save_mcq_jsonl(items, path):
    """Write items as JSONL (one object per line, UTF-8, non-ASCII kept as is); load_mcq_jsonl reads them back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
