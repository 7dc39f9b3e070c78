import json

import pytest

from minigrpo.data.mcq import MCQItem, load_mcq_jsonl, save_mcq_jsonl


def _row(**overrides):
    row = {"id": "q1", "question": "What is 2 + 2?", "options": {"A": "3", "B": "4", "C": "5"}, "answer": "B",
           "explanation": "Adding 2 and 2 gives 4.", "subject": "arithmetic"}
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not ...}


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_save_then_load_gives_back_equal_items(tmp_path):
    items = [
        MCQItem("a", "Which city?", {"A": "Roma", "B": "Zürich"}, "B", ("Zürich est une ville.",), "geo"),
        MCQItem("b", "Pick one.", {"A": "x", "B": "y", "C": "z", "D": "w", "E": "v"}, "E",
                ("First reference.", "Second reference."), None),
    ]
    path = tmp_path / "items.jsonl"
    save_mcq_jsonl(items, path)
    assert load_mcq_jsonl(path) == items
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["explanation"] == "Zürich est une ville."  # one reference is written as a plain string
    assert rows[1]["explanation"] == ["First reference.", "Second reference."]
    assert "subject" not in rows[1]


def test_list_options_map_to_consecutive_letters_and_explanations_key_is_accepted(tmp_path):
    row = _row(options=["3", "4", "5"], explanation=..., explanations=["One.", "Two."])
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(row)])
    (item,) = load_mcq_jsonl(path)
    assert item.options == {"A": "3", "B": "4", "C": "5"}
    assert item.explanations == ("One.", "Two.")
    assert item.explanation == "One." and item.answer_text == "4"


def test_blank_lines_are_skipped_and_extra_fields_ignored(tmp_path):
    path = _write_lines(tmp_path / "d.jsonl", ["", json.dumps(_row(source="book")), "   ", json.dumps(_row(id="q2"))])
    assert [it.id for it in load_mcq_jsonl(path)] == ["q1", "q2"]


def test_item_normalises_explanations_to_a_tuple_and_is_hashable():
    a = MCQItem("x", "Q?", {"A": "a", "B": "b"}, "A", "Because.")
    b = MCQItem("x", "Q?", {"A": "a", "B": "b"}, "A", ["Because."])
    assert a.explanations == ("Because.",) and a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize("line, expected", [
    ('{"id": "q9", "question": ', "expected a JSON object, found invalid JSON"),
    ('["not", "an", "object"]', "expected a JSON object, found list"),
    (json.dumps(_row(explanation=...)), "missing field(s) explanation"),
    (json.dumps(_row(question=..., answer=...)), "missing field(s) question, answer"),
    (json.dumps(_row(answer="D")), "answer: expected one of A, B, C, found 'D'"),
    (json.dumps(_row(answer="b")), "answer: expected one of A, B, C, found 'b'"),
    (json.dumps(_row(explanation="  ")), "explanations[0]: expected a non-empty string, found '  '"),
    (json.dumps(_row(explanation=[])), "explanations: expected a non-empty string or list of strings"),
    (json.dumps(_row(explanation=["ok", ""])), "explanations[1]: expected a non-empty string"),
    (json.dumps(_row(options={"A": "3", "C": "4"}, answer="A")), "lettered consecutively from A (A, B, ...), found "
                                                                "letters ['A', 'C']"),
    (json.dumps(_row(options={"A": "3"}, answer="A")), "expected 2 to 5 options"),
    (json.dumps(_row(options=["1", "2", "3", "4", "5", "6"])), "options: expected a list of 2 to 5 strings, found 6"),
    (json.dumps(_row(options={"A": "3", "B": ""})), "options['B']: expected a non-empty string"),
    (json.dumps(_row(options="A) 3 B) 4")), "options: expected an object letter -> text or a list"),
    (json.dumps(_row(id="")), "id: expected a non-empty string, found ''"),
    (json.dumps(_row(explanations=["x"])), "expected one of 'explanation' or 'explanations', found both"),
])
def test_malformed_line_error_names_file_line_and_expected_vs_found(tmp_path, line, expected):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(_row(id="ok")), "", line])
    with pytest.raises(ValueError) as info:
        load_mcq_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: "), message  # blank line 2 still counts in the numbering
    assert expected in message, message


def test_duplicate_id_error_names_both_lines(tmp_path):
    path = _write_lines(tmp_path / "dup.jsonl", [json.dumps(_row()), json.dumps(_row(id="q2")), json.dumps(_row())])
    with pytest.raises(ValueError, match=r"dup\.jsonl:3: expected a unique id, found 'q1' already used on line 1"):
        load_mcq_jsonl(path)


@pytest.mark.parametrize("answer, found", [(["B"], "list ['B']"), ({"letter": "B"}, "dict {'letter': 'B'}"),
                                           (1, "int 1"), (None, "NoneType None")])
def test_answer_that_is_not_a_string_names_file_line_and_type(tmp_path, answer, found):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(_row(id="ok")), json.dumps(_row(answer=answer))])
    with pytest.raises(ValueError) as info:
        load_mcq_jsonl(path)
    assert str(info.value) == (f"{path}:2: answer: expected one option letter as a string (A, B, C), found {found}")


def test_bytes_that_are_not_utf8_name_file_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(_row(id="ok")).encode()
    bad = json.dumps(_row(question="Qual è la capitale?"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(good + b"\n\n" + bad + b"\n")
    column = bad.index(b"\xe8") + 1
    with pytest.raises(ValueError) as info:
        load_mcq_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: expected UTF-8 text, found byte 0xe8 at column {column}")
