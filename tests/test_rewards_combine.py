import math

import pytest
import torch

from minigrpo.data.formats import CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.rewards import RewardBreakdown, RewardError, SemanticReward, combine_rewards, eval_mode, paper_rewards

FMT = CompletionFormat()
ITEM = MCQItem(id="q1", question="2 + 2?", options={"A": "3", "B": "4"}, answer="B", explanations=("ref",))


def const(*values):
    return lambda completions, items: torch.tensor(values, dtype=torch.float32)


def test_unweighted_sum_by_default_and_components_kept():
    out = combine_rewards({"a": const(1.0, 0.0), "b": const(0.5, 0.25)}, None, ["x", "y"], [ITEM, ITEM])
    assert isinstance(out, RewardBreakdown)
    assert list(out.components) == ["a", "b"]
    torch.testing.assert_close(out.total, torch.tensor([1.5, 0.25]))
    torch.testing.assert_close(out.components["b"], torch.tensor([0.5, 0.25]))
    assert out.means() == {"a": 0.5, "b": 0.375, "total": 0.875}


def test_weights_scale_components_and_missing_weights_are_one():
    # total = 2 * [1, 0] + 1 * [0.5, 0.25] + (-0.5) * [4, 2] = [0.5, -0.75]
    fns = {"a": const(1.0, 0.0), "b": const(0.5, 0.25), "c": const(4.0, 2.0)}
    out = combine_rewards(fns, {"a": 2.0, "c": -0.5}, ["x", "y"], [ITEM, ITEM])
    torch.testing.assert_close(out.total, torch.tensor([0.5, -0.75]))
    torch.testing.assert_close(out.components["c"], torch.tensor([4.0, 2.0]))  # stored before weighting


def test_list_return_values_are_accepted_as_float32():
    out = combine_rewards({"a": lambda c, i: [1, 2]}, None, ["x", "y"], [ITEM, ITEM])
    assert out.components["a"].dtype == torch.float32 and out.total.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("bad", [float("nan"), math.inf, -math.inf])
def test_non_finite_reward_is_an_error_naming_the_function(bad):
    fns = {"good": const(1.0, 1.0), "broken_reward": const(0.0, bad)}
    with pytest.raises(RewardError, match=r"'broken_reward'.*rows \[1\]") as err:
        combine_rewards(fns, None, ["x", "y"], [ITEM, ITEM])
    assert err.value.component == "broken_reward"


def test_weighted_total_that_overflows_is_an_error_naming_the_total():
    fns = {"a": const(3e38, 1.0), "b": const(3e38, 1.0)}  # each finite in float32, their sum is not
    with pytest.raises(RewardError, match=r"weighted sum of the rewards is non-finite at rows \[0\]") as err:
        combine_rewards(fns, None, ["x", "y"], [ITEM, ITEM])
    assert err.value.component == "total"


def test_wrong_number_of_values_is_an_error_naming_the_function():
    with pytest.raises(RewardError, match=r"'short' returned shape \(1,\) for 2 completions"):
        combine_rewards({"short": const(1.0)}, None, ["x", "y"], [ITEM, ITEM])
    with pytest.raises(RewardError, match=r"'matrix' returned shape \(2, 1\)"):
        combine_rewards({"matrix": lambda c, i: torch.zeros(2, 1)}, None, ["x", "y"], [ITEM, ITEM])


def test_exception_inside_a_reward_is_reraised_naming_it():
    def explode(completions, items):
        raise KeyError("missing")

    with pytest.raises(RewardError, match="'explode' raised KeyError") as err:
        combine_rewards({"explode": explode}, None, ["x"], [ITEM])
    assert err.value.component == "explode"


def test_error_names_the_failing_reward_not_a_name_in_its_message():
    # a reward that raises KeyError('correctness') is the failing component, not the correctness reward
    def semantic(completions, items):
        raise KeyError("correctness")

    fns = {"correctness": const(1.0), "semantic": semantic}
    with pytest.raises(RewardError, match="'semantic' raised KeyError: 'correctness'") as err:
        combine_rewards(fns, None, ["x"], [ITEM])
    assert err.value.component == "semantic"


class Stateful:
    """A reward with the train() / eval() protocol that counts the calls made in training mode."""

    def __init__(self):
        self.training, self.updates = True, 0

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, completions, items):
        self.updates += self.training
        return torch.zeros(len(completions))


def test_eval_mode_freezes_stateful_rewards_and_restores_their_mode():
    stateful, frozen_before = Stateful(), Stateful().eval()
    fns = {"s": stateful, "f": frozen_before, "plain": const(1.0)}
    with eval_mode(fns):
        assert not stateful.training
        combine_rewards(fns, None, ["x"], [ITEM])
    assert stateful.updates == 0 and stateful.training and not frozen_before.training
    combine_rewards(fns, None, ["x"], [ITEM])
    assert stateful.updates == 1


def test_unknown_weight_name_is_an_error():
    with pytest.raises(ValueError, match=r"\['semantik'\]"):
        combine_rewards({"semantic": const(1.0)}, {"semantik": 1.0}, ["x"], [ITEM])


class AngleEncoder:
    def __init__(self, angles):
        self.angles = angles

    def embed(self, texts, instruction=None):
        rad = torch.tensor([math.radians(self.angles[t]) for t in texts])
        return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_paper_rewards_names_in_order_for_each_variant():
    enc = AngleEncoder({})
    assert list(paper_rewards(enc)) == ["semantic", "correctness", "format", "cot"]
    assert list(paper_rewards(variant="rouge")) == ["rouge_l", "correctness", "format", "cot"]
    assert list(paper_rewards(enc, variant="semantic+rouge")) == ["semantic", "rouge_l", "correctness", "format",
                                                                    "cot"]
    for name, fn in paper_rewards(enc, variant="semantic+rouge").items():
        assert fn.name == name


def test_paper_rewards_passes_options_through():
    fns = paper_rewards(AngleEncoder({}), baseline="constant", constant=0.3, rescale=True, min_cot_words=7,
                        partial_format=True)
    assert isinstance(fns["semantic"], SemanticReward)
    assert (fns["semantic"].baseline, fns["semantic"].constant, fns["semantic"].rescale) == ("constant", 0.3, True)
    assert fns["cot"].min_words == 7 and fns["format"].partial is True


def test_paper_rewards_bad_variant_or_missing_encoder_is_an_error():
    with pytest.raises(ValueError, match="variant"):
        paper_rewards(AngleEncoder({}), variant="bleu")
    with pytest.raises(ValueError, match="needs an encoder"):
        paper_rewards(None)


def test_paper_reward_total_worked_by_hand():
    enc = AngleEncoder({"ref": 0, "e60": 60})
    fns = paper_rewards(enc, baseline="none")
    completions = [
        FMT.render("one two three four five", "e60", "B"),  # semantic 0.5 + correct 1 + format 1 + cot 1 = 3.5
        FMT.render("too short", "e60", "A") + " tail",       # 0.5 + 0 + 0 + 0 = 0.5
        "no tags at all",                                     # -1 + 0 + 0 + 0 = -1
    ]
    out = combine_rewards(fns, None, completions, [ITEM] * 3)
    torch.testing.assert_close(out.components["semantic"], torch.tensor([0.5, 0.5, -1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.components["correctness"], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(out.components["format"], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(out.components["cot"], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(out.total, torch.tensor([3.5, 0.5, -1.0]), atol=1e-6, rtol=0)
