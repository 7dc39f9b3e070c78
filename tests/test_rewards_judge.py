from types import SimpleNamespace

import pytest
import torch

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer
from minigrpo.rewards.judge import JudgeReward, LMJudge, judge_question, parse_grade

FMT = CompletionFormat()
ITEM = MCQItem(id="q1", question="2 + 2?", options={"A": "3", "B": "4"}, answer="B", explanations=("2 + 2 = 4.",))


@pytest.mark.parametrize("reply, grade", [
    ("8", 8.0), (" 10\n", 10.0), ("Grade: 7/10", 7.0), ("7 / 10", 7.0), ("8.5", 8.5), ("Voto: 7,5", 7.5),
    ("I give it 9 out of 10.", 9.0), ("<think>maybe 3? no</think>\n6", 6.0),
])
def test_parse_grade_reads_the_grade(reply, grade):
    assert parse_grade(reply) == grade


@pytest.mark.parametrize("reply", ["excellent", "", "11", "0", "4/5", "<think>8", None, "-"])
def test_parse_grade_garbage_is_none(reply):
    assert parse_grade(reply) is None


@pytest.mark.parametrize("reply, grade", [
    ("On a scale of 1 to 10, I give it an 8.", 8.0),
    ("I give it an 8 on a scale from 1 to 10.", 8.0),
    ("On a 1-10 scale: 6", 6.0),
    ("Rating (1\u201310): 4", 4.0),
    ("Between 1 and 10, I would say 7.", 7.0),
    ("Score: 9 out of 10", 9.0),
    ("8 out of 10", 8.0),
    ("Grade (out of 10): 5", 5.0),
    ("I would rate this explanation 8/10 because it covers 3 of the 4 key points.", 8.0),
    ("It covers 2 of the 3 key points. Grade: 6", 6.0),
    ("Grade: 8. A perfect answer would get 10.", 8.0),
    ("The explanation is mostly right; I'd rate it a 7 on the 1 to 10 scale.", 7.0),
    ("Using the scale from 1 (useless) to 10 (as good as the reference): 3", 3.0),
    ("Voto: 8 su una scala da 1 a 10", 8.0),
    ("It misses 2 points, so 7", 7.0),
    ("10/10", 10.0),
    ("<think>the scale is 1 to 10, maybe 4</think> I give it 9 out of 10", 9.0),
])
def test_parse_grade_reads_the_grade_not_the_scale(reply, grade):
    assert parse_grade(reply) == grade


@pytest.mark.parametrize("reply", ["on a scale of 1 to 10", "Between 1 and 10.", "4/5", "Grade: 4 out of 5",
                                   "out of 10"])
def test_parse_grade_of_a_scale_alone_or_another_scale_is_none(reply):
    assert parse_grade(reply) is None


class ByteTokenizer:
    """One token per byte plus 3 (0 pad, 1 bos, 2 eos), a chat template that tags the user turn."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    has_chat_template = True

    def apply_chat_template(self, messages, add_generation_prompt=False):
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + ("[assistant]" if add_generation_prompt
                                                                           else "")

    def encode(self, text, add_special_tokens=True):
        return ([self.bos_token_id] if add_special_tokens else []) + [b + 3 for b in text.encode()]

    def batch_encode(self, texts, *, padding_side="left", max_length=None, add_special_tokens=True):
        rows = [self.encode(t, add_special_tokens) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i - 3 for i in ids if i >= 3).decode(errors="replace")


class ScriptedGenerate:
    """Stands in for minigrpo.generation.generate: returns the next scripted replies and records each call."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.calls = tokenizer, list(replies), []

    def __call__(self, model, prompt_ids, prompt_mask, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
                 eos_token_id=None, pad_token_id=0, generator=None):
        batch = prompt_ids.shape[0]
        self.calls.append(dict(prompts=[self.tokenizer.decode(r[m.bool()].tolist())
                                        for r, m in zip(prompt_ids, prompt_mask)],
                               max_new_tokens=max_new_tokens, top_k=top_k, eos_token_id=eos_token_id))
        replies, self.replies = self.replies[:batch], self.replies[batch:]
        rows = [self.tokenizer.encode(r, add_special_tokens=False)[:max_new_tokens] for r in replies]
        width = max(len(r) for r in rows) or 1
        # right-padded completions with a mask, as generate returns them
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return SimpleNamespace(completion_ids=ids, completion_mask=mask)


def make_judge(replies, **kwargs):
    tok = ByteTokenizer()
    gen = ScriptedGenerate(tok, replies)
    return LMJudge(torch.nn.Linear(1, 1), tok, generate_fn=gen, **kwargs), gen


def test_lm_judge_parses_replies_and_counts_failures():
    judge, gen = make_judge(["8", "Grade: 7/10", "I cannot grade this"], max_new_tokens=16)
    grades = judge(["q1", "q2", "q3"], ["c1", "c2", "c3"], ["r1", "r2", "r3"])
    assert grades == [8.0, 7.0, None]
    assert (judge.calls, judge.failures) == (3, 1)
    assert judge.last_replies == ["8", "Grade: 7/10", "I cannot grade t"]  # cut at max_new_tokens = 16


def test_lm_judge_decodes_greedily_and_fills_the_prompt_template():
    judge, gen = make_judge(["5"], max_new_tokens=4)
    judge(["What is 2 + 2?"], ["It is four."], ["Two plus two is four."])
    call = gen.calls[0]
    assert call["top_k"] == 1 and call["max_new_tokens"] == 4 and call["eos_token_id"] == 2
    prompt = call["prompts"][0]
    assert prompt.startswith("[user]") and prompt.endswith("[assistant]")
    for part in ("What is 2 + 2?", "It is four.", "Two plus two is four.", "1", "10"):
        assert part in prompt


def test_lm_judge_splits_into_batches():
    judge, gen = make_judge(["1", "2", "3", "4", "5"], batch_size=2)
    assert judge(["q"] * 5, ["c"] * 5, ["r"] * 5) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [len(c["prompts"]) for c in gen.calls] == [2, 2, 1]


def test_lm_judge_length_mismatch_is_an_error():
    judge, _ = make_judge([])
    with pytest.raises(ValueError, match="LMJudge"):
        judge(["q"], ["c", "d"], ["r"])


def test_judge_reward_divides_by_max_score_and_uses_failure_score():
    seen = {}

    def fake_judge(questions, completions, references):
        seen.update(questions=questions, completions=completions, references=references)
        return [8.0, None, float("nan")]

    reward = JudgeReward(fake_judge, failure_score=0.05)
    completions = [FMT.render("r", "e1", "B"), FMT.render("r", "e2", "B"), FMT.render("r", "e3", "B"), "no tags"]
    out = reward(completions, [ITEM] * 4)
    torch.testing.assert_close(out, torch.tensor([0.8, 0.05, 0.05, 0.0]))
    assert reward.failures == 2
    # the judge sees explanations only, and is not asked about the completion without one
    assert seen["completions"] == ["e1", "e2", "e3"]
    assert seen["references"] == ["2 + 2 = 4."] * 3
    assert seen["questions"][0] == "2 + 2?\nA) 3\nB) 4\nCorrect answer: B"
    assert reward.name == "judge"


def test_judge_reward_with_wrong_number_of_grades_is_an_error():
    reward = JudgeReward(lambda q, c, r: [1.0])
    with pytest.raises(ValueError, match="returned 1 grades for 2"):
        reward([FMT.render("r", "e", "B")] * 2, [ITEM] * 2)


def test_judge_reward_end_to_end_with_lm_judge():
    judge, _ = make_judge(["9", "garbage"])
    out = JudgeReward(judge)([FMT.render("r", "e", "B")] * 2, [ITEM] * 2)
    torch.testing.assert_close(out, torch.tensor([0.9, 0.0]))


def test_judge_question_layout():
    assert judge_question(ITEM) == "2 + 2?\nA) 3\nB) 4\nCorrect answer: B"


def test_lm_judge_with_a_real_tiny_model_is_deterministic_and_never_nan(tmp_path):
    path = tmp_path / "tiny"
    make_tiny_checkpoint(path, arch="llama", seed=0)
    judge = LMJudge(load_causal_lm(path).eval(), load_tokenizer(path), max_new_tokens=4)
    args = (["2 + 2?", "3 + 3?"], ["It is 4.", "It is 6."], ["Four.", "Six."])
    first = judge(*args)
    replies = judge.last_replies
    assert judge(*args) == first and judge.last_replies == replies  # greedy: same replies every time
    assert len(first) == 2 and all(g is None or 1 <= g <= 10 for g in first)
    assert judge.calls == 4 and judge.failures == 2 * sum(g is None for g in first)
    reward = JudgeReward(judge)([FMT.render("r", c, "B") for c in args[1]], [ITEM, ITEM])
    assert torch.isfinite(reward).all()
