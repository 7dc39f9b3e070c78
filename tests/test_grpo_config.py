"""GRPOConfig (minigrpo/grpo/config.py): the paper's defaults, help text, and errors before any compute."""

import dataclasses

import pytest

from minigrpo.grpo.config import GRPOConfig


def test_defaults_are_the_papers_setup():
    c = GRPOConfig()
    assert c.num_generations == 6
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (32, 64.0, 0.0)
    assert c.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert c.max_steps == 1000
    assert c.reward_weights is None  # every reward weighted 1: the unweighted sum
    assert (c.beta, c.eps_low, c.eps_high, c.loss_type, c.num_iterations) == (0.04, 0.2, None, "grpo", 1)
    assert c.max_grad_norm == 1.0
    assert c.batch_rows == c.prompts_per_step * 6


def test_every_field_has_help_text():
    for f in dataclasses.fields(GRPOConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
    assert "num_generations = 6" in GRPOConfig.help()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GRPOConfig().beta = 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_generations=1), "num_generations must be an int >= 2"),
    (dict(prompts_per_step=3, num_generations=6, gradient_accumulation_steps=4), "18 rows do not split"),
    (dict(eps_low=1.0), "eps_low must be in"),
    (dict(eps_low=-0.1), "eps_low must be in"),
    (dict(eps_high=-0.2), "eps_high must be >= 0"),
    (dict(loss_type="ppo"), "loss_type must be one of"),
    (dict(loss_type="dr_grpo", max_completion_length=None), "loss_type 'dr_grpo' divides by it"),
    (dict(dtype="bf16"), "dtype must be one of"),
    (dict(dtype="float16", device="cpu"), "float16' autocast is not supported"),
    (dict(scale_rewards="std"), "scale_rewards must be one of"),
    (dict(temperature=0.0), "temperature must be a number > 0"),
    (dict(top_p=0.0), "top_p must be in"),
    (dict(beta=-1.0), "beta must be a number >= 0"),
    (dict(max_grad_norm=0.0), "max_grad_norm must be > 0 or None"),
    (dict(num_iterations=0), "num_iterations must be an int >= 1"),
    (dict(lr_schedule="linear"), "lr_schedule must be one of"),
    (dict(lora_targets="q_proj"), "lora_targets must be a non-empty tuple"),
    (dict(device="tpu"), "device must be"),
    (dict(merge_for_generation="yes"), "merge_for_generation must be None"),
])
def test_incompatible_values_are_rejected_with_the_field_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**kwargs)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        GRPOConfig(num_generations=1, loss_type="x")
    assert "num_generations" in str(err.value) and "loss_type" in str(err.value)


def test_dict_round_trip_and_unknown_keys():
    c = GRPOConfig(beta=0.0, lora_targets=("q_proj",), reward_weights={"semantic": 2.0})
    assert GRPOConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown keys \['betta'\]"):
        GRPOConfig.from_dict({"betta": 0.1})


def test_valid_micro_batching():
    c = GRPOConfig(prompts_per_step=4, num_generations=6, gradient_accumulation_steps=3, num_iterations=2, max_steps=10)
    assert (c.batch_rows, c.micro_batch_rows, c.total_updates) == (24, 8, 20)


NON_FINITE = [float("nan"), float("inf"), float("-inf")]
FLOAT_FIELDS = ["temperature", "top_p", "beta", "eps_low", "eps_high", "std_floor", "adv_eps", "lora_alpha",
                "lora_dropout", "learning_rate", "min_lr_ratio", "weight_decay", "max_grad_norm"]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_float_field_is_refused_naming_the_field(name, value):
    with pytest.raises(ValueError, match=rf"GRPOConfig: {name} must be .*found {value!r}"):
        GRPOConfig(**{name: value})


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_reward_weight_and_adam_beta_are_refused(value):
    with pytest.raises(ValueError, match="reward_weights must map names to finite numbers"):
        GRPOConfig(reward_weights={"semantic": value})
    with pytest.raises(ValueError, match="adam_betas must be two numbers"):
        GRPOConfig(adam_betas=(0.9, value))


@pytest.mark.parametrize("kwargs, field_name", [
    (dict(learning_rate=True), "learning_rate"),  # a bool is not a learning rate, although True == 1
    (dict(reward_weights={"format": "2"}), "reward_weights"),
    (dict(reward_weights=[("format", 2.0)]), "reward_weights"),
    (dict(adam_betas=("0.9", "0.99")), "adam_betas"),
    (dict(loss_type=["grpo"]), "loss_type"),
])
def test_wrongly_typed_numbers_are_refused_naming_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=f"{field_name} must "):
        GRPOConfig(**kwargs)


@pytest.mark.parametrize("name", ["resume", "progress", "gradient_checkpointing"])
@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_switches_must_be_real_bools_because_a_string_like_no_is_truthy(name, value):
    with pytest.raises(ValueError, match=f"{name} must be True or False, found {value!r}"):
        GRPOConfig(**{name: value})
    assert GRPOConfig(**{name: True}).__getattribute__(name) is True


@pytest.mark.parametrize("device", [None, 0, "cuda:x", "gpu"])
def test_device_of_the_wrong_type_or_form_is_a_clear_error(device):
    with pytest.raises(ValueError, match="device must be"):
        GRPOConfig(device=device)
    assert GRPOConfig(device="cuda:1").device == "cuda:1"


def test_from_dict_refuses_a_string_lora_targets_instead_of_splitting_it_into_characters():
    with pytest.raises(ValueError, match="lora_targets must be a non-empty tuple"):
        GRPOConfig.from_dict({"lora_targets": "q_proj"})
    with pytest.raises(ValueError, match="lora_targets must be a non-empty tuple"):
        GRPOConfig(lora_targets=("q_proj", ""))
    c = GRPOConfig.from_dict({"lora_targets": ["q_proj", "v_proj"], "adam_betas": [0.9, 0.95]})  # JSON lists
    assert (c.lora_targets, c.adam_betas) == (("q_proj", "v_proj"), (0.9, 0.95))


@pytest.mark.parametrize("run_dir", ["", "   ", None, 3])
def test_run_dir_must_be_a_non_empty_path(run_dir):
    with pytest.raises(ValueError, match="run_dir must be a non-empty path"):
        GRPOConfig(run_dir=run_dir)


def test_run_dir_as_a_path_object_is_kept_as_its_string(tmp_path):
    c = GRPOConfig(run_dir=tmp_path / "run")
    assert c.run_dir == str(tmp_path / "run") and GRPOConfig.from_dict(c.to_dict()) == c
