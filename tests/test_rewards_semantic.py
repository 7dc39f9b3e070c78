import math

import pytest
from hypothesis import given, settings, strategies as st
import torch

from minigrpo.data.formats import R1_FORMAT, CompletionFormat
from minigrpo.data.mcq import MCQItem
from minigrpo.rewards.combine import global_batch
from minigrpo.rewards.semantic import SemanticReward

FMT = CompletionFormat()
COS30 = math.sqrt(3) / 2


class AngleEncoder:
    """Maps each known text to the unit vector (cos a, sin a) for a hand-chosen angle a in degrees.

    Records every call, so tests can count encoder calls and the texts embedded.
    """

    def __init__(self, angles):
        self.angles = angles
        self.calls = []

    def embed(self, texts, instruction=None):
        self.calls.append((list(texts), instruction))
        rad = torch.tensor([math.radians(self.angles[t]) for t in texts], dtype=torch.float64)
        return torch.stack([rad.cos(), rad.sin()], dim=1).float()  # (N, 2), unit rows

    def embedded_texts(self):
        return [t for texts, _ in self.calls for t in texts]


def item(qid, *refs):
    return MCQItem(id=qid, question=f"question {qid}?", options={"A": "yes", "B": "no"}, answer="A",
                   explanations=tuple(refs))


def completion(explanation, fmt=FMT):
    return fmt.render("some reasoning words here now", explanation, "A")


def test_no_baseline_reward_is_the_cosine_of_the_angle():
    enc = AngleEncoder({"ref": 0, "e60": 60, "e90": 90, "e180": 180})
    reward = SemanticReward(enc, baseline="none")
    q = item("q1", "ref")
    out = reward([completion("e60"), completion("e90"), completion("e180")], [q, q, q])
    assert out.dtype == torch.float32 and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.0, -1.0]), atol=1e-6, rtol=0)
    assert reward.name == "semantic"


def test_constant_baseline_subtracts_then_rescale_divides_by_room_above_it():
    enc = AngleEncoder({"ref": 0, "e60": 60, "e0": 0})
    q = item("q1", "ref")
    plain = SemanticReward(enc, baseline="constant", constant=0.2)
    # cos 60 = 0.5: 0.5 - 0.2 = 0.3; a perfect match 1 - 0.2 = 0.8
    torch.testing.assert_close(plain([completion("e60"), completion("e0")], [q, q]), torch.tensor([0.3, 0.8]),
                               atol=1e-6, rtol=0)
    scaled = SemanticReward(enc, baseline="constant", constant=0.2, rescale=True)
    # (0.5 - 0.2) / (1 - 0.2) = 0.375; a perfect match stays 1
    torch.testing.assert_close(scaled([completion("e60"), completion("e0")], [q, q]), torch.tensor([0.375, 1.0]),
                               atol=1e-6, rtol=0)


def test_result_is_clipped_to_minus_one_one():
    enc = AngleEncoder({"ref": 0, "e180": 180})
    q = item("q1", "ref")
    # cos 180 = -1, minus b = 0.5 gives -1.5, clipped to -1; b = -0.5 on a perfect match gives 1.5, clipped to 1
    low = SemanticReward(enc, baseline="constant", constant=0.5)
    assert low([completion("e180")], [q]).item() == -1.0
    high = SemanticReward(AngleEncoder({"ref": 0, "e0": 0}), baseline="constant", constant=-0.5)
    assert high([completion("e0")], [q]).item() == 1.0


def off_target_batch():
    """Three questions with references at 0, 90 and 120 degrees; question 2 appears twice."""
    enc = AngleEncoder({"r1": 0, "r2": 90, "r3": 120, "e30": 30, "e60": 60, "e150": 150})
    q1, q2, q3 = item("q1", "r1"), item("q2", "r2"), item("q3", "r3")
    completions = [completion("e30"), completion("e60"), completion("e60"), completion("e150")]
    return enc, completions, [q1, q2, q2, q3]


# b_q of off_target_batch: the mean cosine of q's reference to the other questions' references
#   q1 (0):   q2 (90) cos 90 = 0,  q3 (120) cos 120 = -0.5      -> b = -0.25
#   q2 (90):  q1 (0)  cos 90 = 0,  q3 (120) cos 30 = 0.8660     -> b = COS30 / 2 = 0.4330
#   q3 (120): q1 (0)  cos 120 = -0.5, q2 (90) cos 30 = 0.8660   -> b = (COS30 - 0.5) / 2 = 0.1830
B1, B2, B3 = -0.25, COS30 / 2, (COS30 - 0.5) / 2


def test_off_target_baseline_is_mean_cosine_of_the_reference_to_other_questions_references():
    enc, completions, items = off_target_batch()
    out = SemanticReward(enc, baseline="off_target")(completions, items)
    # e30 (q1): own cos 30 = 0.8660 - b1 = 1.116, clipped to 1
    # e60 (q2): own cos 30 - b2 (q2 appears twice, but the baseline is built from references only)
    # e150 (q3): own cos 30 - b3
    expected = torch.tensor([1.0, COS30 - B2, COS30 - B2, COS30 - B3])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_off_target_counts_each_other_question_once_however_often_it_is_repeated():
    enc = AngleEncoder({"r1": 0, "r2": 90, "r3": 120, "e30": 30, "e60": 60})
    q1, q2, q3 = item("q1", "r1"), item("q2", "r2"), item("q3", "r3")
    # q2 four times, q3 once: for q1, b = (cos 90 + cos 120) / 2 = -0.25, not (4 * 0 - 0.5) / 5 = -0.1
    out = SemanticReward(enc)([completion("e60")] + [completion("e60")] * 4 + [completion("e30")],
                              [q1, q2, q2, q2, q2, q3])
    assert out[0].item() == pytest.approx(0.5 + 0.25, abs=1e-6)


def test_off_target_with_rescale():
    enc, completions, items = off_target_batch()
    out = SemanticReward(enc, baseline="off_target", rescale=True)(completions, items)
    assert out[0].item() == pytest.approx((COS30 - B1) / (1 - B1), abs=1e-6)
    assert out[1].item() == pytest.approx((COS30 - B2) / (1 - B2), abs=1e-6)


def test_off_target_includes_questions_whose_completions_have_no_explanation():
    enc, completions, items = off_target_batch()
    completions = [completions[0], "no tags", "no tags", "no tags"]
    out = SemanticReward(enc)(completions, items)
    # the e30 row's baseline still counts q2 and q3: b1 = -0.25, and cos 30 + 0.25 is clipped to 1
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, -1.0, -1.0]), atol=1e-6, rtol=0)
    assert SemanticReward(enc)(completions[:1], items[:1]).item() == pytest.approx(COS30, abs=1e-6)  # alone: b = 0


def test_off_target_single_question_falls_back_to_running_mean_of_earlier_baselines():
    enc, completions, items = off_target_batch()
    reward = SemanticReward(enc, baseline="off_target")
    q1 = items[0]
    # no earlier batch: b = 0, the raw cosine
    assert reward([completion("e30")], [q1]).item() == pytest.approx(COS30, abs=1e-6)
    reward(completions, items)  # batch-mean b over the four rows: (b1 + b2 + b2 + b3) / 4
    batch_mean = (B1 + 2 * B2 + B3) / 4
    assert reward.last_stats["baseline_mean"] == pytest.approx(batch_mean, abs=1e-6)
    assert reward([completion("e30")], [q1]).item() == pytest.approx(COS30 - batch_mean, abs=1e-6)


def test_eval_mode_reads_the_running_mean_without_updating_it():
    enc, completions, items = off_target_batch()
    reward = SemanticReward(enc, baseline="off_target")
    reward(completions, items)  # training mode: the running mean now holds this batch's mean baseline
    state = reward.state_dict()
    reward.eval()
    reward(completions, items)  # an evaluation batch: read, not recorded
    assert reward.state_dict() == state
    batch_mean = (B1 + 2 * B2 + B3) / 4  # the training batch's mean baseline, as recorded before eval()
    assert reward([completion("e30")], [items[0]]).item() == pytest.approx(COS30 - batch_mean, abs=1e-6)
    reward.train()
    reward(completions, items)
    assert reward.state_dict()["off_target_calls"] == state["off_target_calls"] + 1


def test_under_global_batch_each_share_is_scored_as_in_the_whole_batch():
    # two data-parallel ranks: rank 0 holds q1's row and one q2 row, rank 1 the other q2 row and q3's
    enc, completions, items = off_target_batch()
    whole = SemanticReward(enc)
    expected = whole(completions, items)
    sent = []  # what each rank hands to all_sum when the block ends: (sum of its rows' b, its rows)
    for rows in (slice(0, 2), slice(2, 4)):
        reward = SemanticReward(enc)
        with global_batch({"semantic": reward}, items, all_sum=lambda t: sent.append(t.tolist()) or t):
            out = reward(completions[rows], items[rows])
        torch.testing.assert_close(out, expected[rows], atol=1e-6, rtol=0)
    # b per row (B1, B2, B3 above): q1, q2 on rank 0 | q2, q3 on rank 1
    assert sent == [pytest.approx([B1 + B2, 2.0], abs=1e-6), pytest.approx([B2 + B3, 2.0], abs=1e-6)]
    # when all_sum adds both ranks' contributions, a rank's running mean is the whole batch's
    both = torch.tensor(sent, dtype=torch.float64).sum(dim=0)
    reward = SemanticReward(enc)
    with global_batch({"semantic": reward}, items, all_sum=lambda t: both):
        reward(completions[:2], items[:2])
    assert reward.state_dict() == pytest.approx(whole.state_dict(), abs=1e-6)


def test_global_batch_refuses_a_completion_of_an_item_outside_it():
    enc, completions, items = off_target_batch()
    reward = SemanticReward(enc)
    with pytest.raises(ValueError, match="item 'q3' is not in global_batch"):
        with global_batch({"semantic": reward}, items[:3], all_sum=lambda t: t):
            reward(completions, items)


def test_state_dict_round_trip_gives_the_same_rewards():
    enc, completions, items = off_target_batch()
    trained = SemanticReward(enc)
    trained(completions, items)
    fresh = SemanticReward(enc)
    q1_alone = ([completion("e30")], [items[0]])
    assert fresh(*q1_alone).item() == pytest.approx(COS30, abs=1e-6)  # no running mean yet: b = 0
    fresh.load_state_dict(trained.state_dict())
    assert fresh(*q1_alone).item() == trained(*q1_alone).item() != pytest.approx(COS30, abs=1e-3)


def test_several_references_max_or_mean():
    enc = AngleEncoder({"ra": 0, "rb": 90, "e30": 30})
    q = item("q1", "ra", "rb")
    c = [completion("e30")]
    # cosines to the two references: cos 30 = 0.8660 and cos 60 = 0.5
    assert SemanticReward(enc, baseline="none", reduce="max")(c, [q]).item() == pytest.approx(COS30, abs=1e-6)
    assert SemanticReward(enc, baseline="none", reduce="mean")(c, [q]).item() == pytest.approx(
        (COS30 + 0.5) / 2, abs=1e-6)


def test_off_target_uses_the_same_reduction_over_the_questions_references():
    enc = AngleEncoder({"r1": 0, "r2a": 60, "r2b": 120, "e30": 30, "e90": 90})
    q1, q2 = item("q1", "r1"), item("q2", "r2a", "r2b")
    c = [completion("e30"), completion("e90")]
    # b_q2: q1's reference r1 as an explanation of q2: cos 60 = 0.5 to r2a, cos 120 = -0.5 to r2b -> max 0.5, mean 0
    # b_q1: q2's references as explanations of q1: cos 60 = 0.5 and cos 120 = -0.5 (one reference each, so max and
    #   mean agree), averaged over q2's two references -> 0
    out_max = SemanticReward(enc, reduce="max")(c, [q1, q2])
    out_mean = SemanticReward(enc, reduce="mean")(c, [q1, q2])
    assert out_max[0].item() == pytest.approx(COS30, abs=1e-6) and out_mean[0].item() == pytest.approx(COS30, abs=1e-6)
    # row 1 (e90, q2): own cosines cos 30 to both references -> max = mean = 0.8660
    assert out_max[1].item() == pytest.approx(COS30 - 0.5, abs=1e-6)
    assert out_mean[1].item() == pytest.approx(COS30 - 0.0, abs=1e-6)


@pytest.mark.parametrize("text", ["", "no tags at all", FMT.render("r", "   ", "A"),
                                  "<reasoning>r</reasoning><explanation>never closed"])
def test_missing_or_empty_explanation_scores_minus_one_and_is_not_embedded(text):
    enc = AngleEncoder({"ref": 0, "e60": 60})
    q = item("q1", "ref")
    out = SemanticReward(enc, baseline="off_target", rescale=True)([text, completion("e60")], [q, q])
    assert out[0].item() == -1.0 and torch.isfinite(out).all()
    assert "" not in enc.embedded_texts() and "   " not in enc.embedded_texts()


def test_all_explanations_missing_makes_no_encoder_call():
    enc = AngleEncoder({})
    out = SemanticReward(enc)(["x", "y"], [item("q1", "ref"), item("q2", "ref2")])
    torch.testing.assert_close(out, torch.tensor([-1.0, -1.0]))
    assert enc.calls == []


def test_reference_embeddings_are_cached_across_calls():
    enc, completions, items = off_target_batch()
    reward = SemanticReward(enc)
    first = reward(completions, items)
    assert len(enc.calls) == 2                                   # references, then explanations
    assert sorted(enc.calls[0][0]) == ["r1", "r2", "r3"]         # each distinct reference once
    assert reward.cache_size == 3
    second = reward(completions, items)
    assert len(enc.calls) == 3                                   # only the explanations again
    assert enc.calls[2][0] == ["e30", "e60", "e60", "e150"]      # one batched call for all explanations
    torch.testing.assert_close(first, second)
    assert enc.embedded_texts().count("r1") == 1


def test_only_new_references_are_embedded():
    enc = AngleEncoder({"r1": 0, "r2": 90, "e30": 30})
    reward = SemanticReward(enc, baseline="none")
    reward([completion("e30")], [item("q1", "r1")])
    reward([completion("e30"), completion("e30")], [item("q1", "r1"), item("q2", "r2")])
    assert enc.calls[2][0] == ["r2"]


def test_instruction_is_passed_for_explanations_and_references():
    enc = AngleEncoder({"ref": 0, "e60": 60})
    SemanticReward(enc, baseline="none", instruction="Compare explanations")([completion("e60")], [item("q", "ref")])
    assert [instr for _, instr in enc.calls] == ["Compare explanations", "Compare explanations"]


def test_r1_format_explanation_is_scored():
    enc = AngleEncoder({"ref": 0, "e60": 60})
    out = SemanticReward(enc, baseline="none", fmt=R1_FORMAT)([completion("e60", R1_FORMAT)], [item("q", "ref")])
    assert out.item() == pytest.approx(0.5, abs=1e-6)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="baseline"):
        SemanticReward(AngleEncoder({}), baseline="mean")
    with pytest.raises(ValueError, match="reduce"):
        SemanticReward(AngleEncoder({}), reduce="min")
    with pytest.raises(ValueError, match="2 completions and 1 items"):
        SemanticReward(AngleEncoder({}))(["a", "b"], [item("q", "r")])


def test_encoder_returning_wrong_shape_is_an_error():
    class Broken:
        def embed(self, texts):
            return torch.zeros(len(texts) + 1, 2)

    with pytest.raises(ValueError, match="encoder.embed"):
        SemanticReward(Broken())([completion("e")], [item("q", "r")])


def test_verbatim_copy_of_the_reference_scores_above_a_worse_match():
    # q's reference at 0 degrees, the other question's at 30. The copy has cos 1; the other explanation, at -64.5
    # degrees, has cos 0.4305 to q's reference and cos 94.5 = -0.0785 to the other one. A baseline built from the
    # completion's own off-target cosines scored them 1 - 0.8660 = 0.134 and 0.4305 + 0.0785 = 0.509: the worse
    # match won. Built from the references, b = cos 30 for both: 0.134 and 0.4305 - 0.8660 = -0.4355.
    enc = AngleEncoder({"r": 0, "r_other": 30, "copy": 0, "worse": -64.5})
    q, other = item("q", "r"), item("other", "r_other")
    out = SemanticReward(enc, baseline="off_target")([completion("copy"), completion("worse"), completion("copy")],
                                                     [q, q, other])
    cos_worse = math.cos(math.radians(64.5))
    torch.testing.assert_close(out[:2], torch.tensor([1 - COS30, cos_worse - COS30]), atol=1e-6, rtol=0)
    assert out[0] > out[1]


def _assert_monotone_within_questions(rows, ref_angles, out, reduce):
    """Rows (question, angle): whenever row i matches its question clearly better than row j, R_i >= R_j."""
    red = max if reduce == "max" else (lambda xs: sum(xs) / len(xs))
    own = [red([math.cos(math.radians(a - r)) for r in ref_angles[q]]) for q, a in rows]
    for i, (qi, _) in enumerate(rows):
        for j, (qj, _) in enumerate(rows):
            if qi == qj and own[i] > own[j] + 1e-4:
                assert out[i] >= out[j] - 1e-6, (rows[i], rows[j], own[i], own[j], out[i].item(), out[j].item())


def _score(rows, ref_angles, **kwargs):
    angles = {f"r{q}_{k}": a for q, refs in enumerate(ref_angles) for k, a in enumerate(refs)}
    angles.update({f"e{i}": a for i, (_, a) in enumerate(rows)})
    items = [item(f"q{q}", *[f"r{q}_{k}" for k in range(len(ref_angles[q]))]) for q, _ in rows]
    return SemanticReward(AngleEncoder(angles), constant=0.3, **kwargs)([completion(f"e{i}")
                                                                         for i in range(len(rows))], items)


@pytest.mark.parametrize("baseline", ["none", "constant", "off_target"])
@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_a_better_match_never_scores_lower_on_a_grid_of_angles(baseline, rescale, reduce):
    # Three questions (two of them with two references); q0 answered at every 15 degrees, the others at a few.
    ref_angles = [[0, 50], [30], [100, 200]]
    rows = [(0, a) for a in range(-180, 180, 15)] + [(1, a) for a in (30, -40, 120)] + [(2, a) for a in (100, 10)]
    out = _score(rows, ref_angles, baseline=baseline, rescale=rescale, reduce=reduce)
    _assert_monotone_within_questions(rows, ref_angles, out, reduce)


_angle = st.integers(-180, 180)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), baseline=st.sampled_from(["none", "constant", "off_target"]), rescale=st.booleans(),
       reduce=st.sampled_from(["max", "mean"]), n_questions=st.integers(1, 3))
def test_a_better_match_never_scores_lower(data, baseline, rescale, reduce, n_questions):
    """Within one question (one GRPO group), the reward is non-decreasing in the completion's own cosine."""
    ref_angles = [data.draw(st.lists(_angle, min_size=1, max_size=2)) for _ in range(n_questions)]
    rows = data.draw(st.lists(st.tuples(st.integers(0, n_questions - 1), _angle), min_size=2, max_size=8))
    out = _score(rows, ref_angles, baseline=baseline, rescale=rescale, reduce=reduce)
    _assert_monotone_within_questions(rows, ref_angles, out, reduce)
