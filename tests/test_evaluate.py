"""evaluate_policy (minigrpo/eval/evaluate.py): greedy completions of a tiny llama, scored by hand-chosen rewards."""

import dataclasses

import pytest
import torch

from minigrpo.data import MCQItem
from minigrpo.eval import EvalResult, evaluate_policy
from minigrpo.generation import generate
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer

ITEMS = [
    MCQItem(id="q0", question="What do plants need to grow?", options={"A": "light", "B": "salt"}, answer="A",
            explanations=("Plants make food from light.",)),
    MCQItem(id="q1", question="Which is a metal?", options={"A": "wood", "B": "iron", "C": "glass"}, answer="B",
            explanations=("Iron is a metal.",)),
    MCQItem(id="q2", question="Where does the sun rise?", options={"A": "east", "B": "west"}, answer="A",
            explanations=("The sun rises in the east.",)),
]
MAX_NEW = 6


def prompt_fn(item):
    options = " ".join(f"{k}) {v}" for k, v in item.options.items())
    return f"Question: {item.question} {options}\nAnswer:"


# Rewards that ignore the text, so every number below is worked out by hand:
#   correctness (1, 0, 1)  format 0.5 everywhere  bonus (0, 3, 0)
#   with weights correctness 2, format 1 (default), bonus -1: total (2.5, -2.5, 2.5), mean 2.5 / 3
CORRECT = {"q0": 1.0, "q1": 0.0, "q2": 1.0}
BONUS = {"q0": 0.0, "q1": 3.0, "q2": 0.0}
WEIGHTS = {"correctness": 2.0, "bonus": -1.0}


class Recorder:
    """A reward fn returning a fixed value per item id, keeping the completions it was shown."""

    def __init__(self, values):
        self.values, self.seen = values, []

    def __call__(self, completions, items):
        self.seen.append(list(completions))
        return torch.tensor([self.values(it) for it in items])


def _reward_fns():
    return {"correctness": Recorder(lambda it: CORRECT[it.id]), "format": Recorder(lambda it: 0.5),
            "bonus": Recorder(lambda it: BONUS[it.id])}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0)
    return load_causal_lm(path), load_tokenizer(path)


def _evaluate(policy, reward_fns=None, **kw):
    model, tok = policy
    return evaluate_policy(model, tok, ITEMS, prompt_fn, reward_fns or _reward_fns(), weights=WEIGHTS,
                           max_new_tokens=MAX_NEW, **kw)


def test_metrics_equal_the_hand_computed_means(policy):
    result = _evaluate(policy)
    assert isinstance(result, EvalResult)
    assert result.accuracy == pytest.approx(2 / 3, abs=1e-6)
    assert result.format_rate == pytest.approx(0.5, abs=1e-6)
    assert result.reward == pytest.approx(2.5 / 3, abs=1e-6)
    assert result.rewards == pytest.approx({"correctness": 2 / 3, "format": 0.5, "bonus": 1.0}, abs=1e-6)
    assert list(result.rewards) == ["correctness", "format", "bonus"]  # reward_fns order


def test_accuracy_by_subject_averages_correctness_within_each_subject(policy):
    # q0 and q2 are biology (correct 1, 1), q1 is chemistry (correct 0); an item without a subject is left out
    labelled = [dataclasses.replace(it, subject=s) for it, s in zip(ITEMS, ("bio", "chem", "bio"))]
    model, tok = policy
    result = evaluate_policy(model, tok, labelled, prompt_fn, _reward_fns(), max_new_tokens=MAX_NEW)
    assert result.accuracy_by_subject == {"bio": 1.0, "chem": 0.0}
    assert _evaluate(policy).accuracy_by_subject == {}  # ITEMS carry no subject


def test_rewards_see_the_greedy_completions_of_the_model(policy):
    model, tok = policy
    fns = _reward_fns()
    result = _evaluate(policy, reward_fns=fns)
    # the same prompts decoded directly: left padding, no special tokens added, temperature 0
    ids, mask = tok.batch_encode([prompt_fn(it) for it in ITEMS], padding_side="left", add_special_tokens=False)
    out = generate(model, ids, mask, max_new_tokens=MAX_NEW, temperature=0.0, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id)
    expected = tok.batch_decode([r[m.bool()].tolist() for r, m in zip(out.completion_ids, out.completion_mask)])
    assert fns["correctness"].seen == [expected] and fns["bonus"].seen == [expected]
    assert result.mean_completion_tokens == pytest.approx(out.completion_mask.sum().item() / 3, abs=1e-9)
    assert 0 < result.mean_completion_tokens <= MAX_NEW


def test_samples_hold_prompt_completion_and_rounded_rewards(policy):
    fns = _reward_fns()
    result = _evaluate(policy, reward_fns=fns, num_samples=2)
    assert len(result.samples) == 2
    for i, sample in enumerate(result.samples):
        assert sample["prompt"] == prompt_fn(ITEMS[i])
        assert sample["completion"] == fns["format"].seen[0][i]
        assert sample["rewards"] == {"correctness": CORRECT[ITEMS[i].id], "format": 0.5, "bonus": BONUS[ITEMS[i].id]}
    assert result.as_dict()["samples"] == result.samples


def test_every_completion_is_kept_in_item_order_and_left_out_of_as_dict(policy):
    fns = _reward_fns()
    result = _evaluate(policy, reward_fns=fns, batch_size=2, num_samples=1)  # two generation batches
    assert len(result.completions) == len(ITEMS)
    assert result.completions == fns["format"].seen[0]  # the texts the rewards scored, item by item
    assert result.samples[0]["completion"] == result.completions[0]
    assert "completions" not in result.as_dict()  # results.json keeps metrics; completions go to their own file


def test_greedy_evaluation_is_deterministic_and_independent_of_batch_size(policy):
    first, second = _evaluate(policy), _evaluate(policy)
    assert first.as_dict() == second.as_dict()
    fns_full, fns_split = _reward_fns(), _reward_fns()
    _evaluate(policy, reward_fns=fns_full, batch_size=32)
    _evaluate(policy, reward_fns=fns_split, batch_size=2)  # batches of 2 and 1: different padding
    assert fns_split["format"].seen == fns_full["format"].seen


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(policy, training):
    model, _ = policy
    model.train(training)
    try:
        _evaluate(policy)
        assert model.training is training
    finally:
        model.eval()


@pytest.mark.parametrize("missing", ["correctness", "format"])
def test_missing_accuracy_or_format_reward_raises_value_error_naming_it(policy, missing):
    model, tok = policy
    fns = {k: v for k, v in _reward_fns().items() if k != missing}
    with pytest.raises(ValueError, match=repr(missing)):
        evaluate_policy(model, tok, ITEMS, prompt_fn, fns, max_new_tokens=MAX_NEW)
    assert all(not fn.seen for fn in fns.values())  # checked before any generation or scoring


def test_accuracy_and_format_components_can_be_renamed(policy):
    fns = {"acc": Recorder(lambda it: CORRECT[it.id]), "fmt": Recorder(lambda it: 1.0)}
    model, tok = policy
    result = evaluate_policy(model, tok, ITEMS, prompt_fn, fns, max_new_tokens=MAX_NEW, correctness="acc",
                             fmt_reward="fmt")
    assert result.accuracy == pytest.approx(2 / 3, abs=1e-6) and result.format_rate == 1.0
    assert result.reward == pytest.approx(5 / 3, abs=1e-6)


def test_long_prompts_keep_their_last_tokens_as_in_training_rollouts(policy):
    # The end of a prompt holds the options and the answer cue the model continues from; GRPO rollouts keep it
    # (left truncation), so evaluation must see the same truncated prompts.
    model, tok = policy
    keep = 4
    fns = _reward_fns()
    _evaluate(policy, reward_fns=fns, max_prompt_length=keep)
    tails = [tok.encode(prompt_fn(it), add_special_tokens=False)[-keep:] for it in ITEMS]
    ids = torch.tensor(tails)  # (3, 4): every prompt is longer than 4 tokens, so no padding
    assert all(len(tok.encode(prompt_fn(it), add_special_tokens=False)) > keep for it in ITEMS)
    out = generate(model, ids, torch.ones_like(ids), max_new_tokens=MAX_NEW, temperature=0.0,
                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    expected = tok.batch_decode([r[m.bool()].tolist() for r, m in zip(out.completion_ids, out.completion_mask)])
    assert fns["format"].seen == [expected]


class RunningMean(Recorder):
    """A reward with running state and the train() / eval() protocol, like SemanticReward's off-target mean."""

    def __init__(self, values):
        super().__init__(values)
        self.training, self.updates = True, 0

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, completions, items):
        self.updates += self.training
        return super().__call__(completions, items)


def test_evaluation_leaves_the_running_state_of_rewards_unchanged(policy):
    fns = {**_reward_fns(), "bonus": RunningMean(lambda it: BONUS[it.id])}
    _evaluate(policy, reward_fns=fns)
    assert fns["bonus"].seen and fns["bonus"].updates == 0  # scored in eval mode: nothing recorded
    assert fns["bonus"].training  # and handed back in the mode it came in
