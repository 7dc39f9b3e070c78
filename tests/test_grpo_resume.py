"""What a resumed GRPO run may change (minigrpo/grpo/resume.py): run-changing fields are named, the others free."""

import dataclasses
import json

import pytest

from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.resume import FREE_FIELDS, check_config, check_rewards, resume_conflicts


def saved(config):
    return json.loads(json.dumps(config.to_dict()))  # as config.json holds it: tuples become lists


def test_identical_config_has_no_conflict():
    c = GRPOConfig(lora_targets=("q_proj", "v_proj"), reward_weights={"a": 2.0})
    assert resume_conflicts(saved(c), c) == []


@pytest.mark.parametrize("field, value", [("learning_rate", 2e-5), ("seed", 1), ("prompts_per_step", 8),
                                          ("temperature", 0.7), ("loss_type", "dapo"), ("lora_targets", ("q_proj",)),
                                          ("reward_weights", {"a": 2.0}), ("lr_schedule", "constant")])
def test_a_field_that_changes_the_run_is_named_with_both_values(field, value):
    before, after = GRPOConfig(), dataclasses.replace(GRPOConfig(), **{field: value})
    [message] = resume_conflicts(saved(before), after)
    assert message.startswith(f"{field}: {saved(before)[field]!r} in the checkpoint, {saved(after)[field]!r} now")


def test_fields_that_change_only_how_or_where_may_differ():
    before = GRPOConfig(prompts_per_step=4, num_generations=6)
    after = dataclasses.replace(before, progress=False, sample_interval=1, num_samples=1, save_interval=5,
                                save_total_limit=5, resume=True, run_dir="elsewhere", device="cpu",
                                gradient_checkpointing=True, logprob_chunk_size=0, gradient_accumulation_steps=3,
                                max_steps=2000, dist_timeout=30)
    assert {f.name for f in dataclasses.fields(GRPOConfig) if getattr(before, f.name) != getattr(after, f.name)} \
        == set(FREE_FIELDS)
    assert resume_conflicts(saved(before), after) == []


def test_check_config_refuses_and_warns_about_a_stretched_cosine_schedule(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(saved(GRPOConfig(max_steps=10))))
    with pytest.raises(ValueError, match=r"cannot resume .*: seed: 0 in the checkpoint, 3 now\. Resume with"):
        check_config(tmp_path, GRPOConfig(max_steps=10, seed=3))
    with pytest.warns(UserWarning, match="cosine learning-rate schedule now spans 20 updates"):
        check_config(tmp_path, GRPOConfig(max_steps=20))
    check_config(tmp_path, GRPOConfig(max_steps=10))  # the same run: nothing to say


def test_check_rewards_refuses_another_set_of_weighted_rewards(tmp_path):
    check_rewards(tmp_path, {"a": 1.0}, {"a": 1.0})
    check_rewards(tmp_path, None, {"a": 1.0})  # not recorded: nothing to compare
    with pytest.raises(ValueError, match=r"reward functions and weights: \{'a': 1.0\} in the checkpoint, "
                                         r"\{'a': 1.0, 'b': 1.0\} now"):
        check_rewards(tmp_path, {"a": 1.0}, {"a": 1.0, "b": 1.0})
