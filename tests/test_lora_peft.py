"""PEFT-format adapters (minigrpo/lora/peft_format.py): files PEFT reads, files PEFT wrote, and clear errors."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from minigrpo.lora import LoRALinear, inject_lora, load_adapter, lora_state_dict, merge_lora, save_adapter

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj")
IDS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]])


def randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_state_dict(model).items():
            if name.endswith("lora_B.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def checkpoint(request, tmp_path_factory):
    from minigrpo.miniature.tiny import make_tiny_checkpoint

    path = tmp_path_factory.mktemp(request.param)
    make_tiny_checkpoint(path, arch=request.param, seed=0)
    return path


def hf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def our_model(path):
    from minigrpo.models import load_causal_lm

    return load_causal_lm(path).eval()


@pytest.mark.parametrize("use_rslora", [False, True])
def test_adapter_saved_here_gives_same_logits_in_peft(checkpoint, tmp_path, use_rslora):
    lm = our_model(checkpoint)
    inject_lora(lm, r=4, alpha=8, targets=TARGETS, use_rslora=use_rslora)
    randomize_b(lm)
    save_adapter(lm, tmp_path / "adapter", base_model_name_or_path=str(checkpoint))

    theirs = peft.PeftModel.from_pretrained(hf_model(checkpoint), tmp_path / "adapter").eval()
    with torch.no_grad():
        ours_logits = lm(IDS)
        peft_logits = theirs(IDS).logits
        with theirs.disable_adapter():
            base_logits = theirs(IDS).logits
    assert (peft_logits - base_logits).abs().max() > 1e-2  # the adapter really changes the output
    assert (ours_logits - peft_logits).abs().max().item() < 1e-4


def test_adapter_saved_by_peft_gives_same_logits_here(checkpoint, tmp_path):
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS), task_type="CAUSAL_LM",
                             init_lora_weights=False)  # random B, so the adapter is not a no-op
    theirs = peft.get_peft_model(hf_model(checkpoint), config).eval()
    theirs.save_pretrained(tmp_path / "adapter")

    lm = our_model(checkpoint)
    summary = load_adapter(lm, tmp_path / "adapter")  # injects from adapter_config.json
    assert summary.config.r == 4 and summary.config.alpha == 8 and set(summary.config.targets) == set(TARGETS)
    with torch.no_grad():
        peft_logits = theirs(IDS).logits
        with theirs.disable_adapter():
            base_logits = theirs(IDS).logits
        ours_logits = lm(IDS)
    assert (peft_logits - base_logits).abs().max() > 1e-2
    assert (ours_logits - peft_logits).abs().max().item() < 1e-4


def test_adapter_init_equals_peft_for_the_same_seed():
    base = nn.Linear(16, 24)
    torch.manual_seed(1)
    ours = LoRALinear(base, r=4, alpha=8)
    torch.manual_seed(1)
    theirs = peft.tuners.lora.Linear(base, "default", config=peft.LoraConfig(r=4, lora_alpha=8), r=4, lora_alpha=8)
    assert torch.equal(ours.lora_A.weight, theirs.lora_A["default"].weight)
    assert torch.equal(ours.lora_B.weight, theirs.lora_B["default"].weight)


def test_bare_body_is_saved_as_feature_extraction_and_loads_in_peft(checkpoint, tmp_path):
    from minigrpo.models import load_body

    body = load_body(checkpoint)  # no lm_head: the encoder's case
    inject_lora(body, r=2, alpha=4, targets=("q_proj", "v_proj"))
    randomize_b(body)
    save_adapter(body, tmp_path)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == "FEATURE_EXTRACTION"
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in set(f.keys())  # one "model." fewer
    hf_body = transformers.AutoModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    theirs = peft.PeftModel.from_pretrained(hf_body, tmp_path).eval()
    with torch.no_grad():
        diff = (body(IDS) - theirs(input_ids=IDS).last_hidden_state).abs().max().item()
    assert diff < 1e-4


# ---- the files themselves, and errors, on a small model that needs no checkpoint ----


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(8, 8, bias=False)
        self.self_attn.v_proj = nn.Linear(8, 4, bias=False)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(8, 11, bias=False)


def saved_toy(tmp_path, **kw):
    torch.manual_seed(0)
    model = Toy()
    inject_lora(model, r=2, alpha=4, targets=("q_proj", "v_proj"), **kw)
    randomize_b(model)
    save_adapter(model, tmp_path, base_model_name_or_path="org/base")
    return model


def test_files_follow_peft_format(tmp_path):
    model = saved_toy(tmp_path, dropout=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    expected = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "lora_dropout": 0.05,
                "target_modules": ["q_proj", "v_proj"], "use_rslora": False, "base_model_name_or_path": "org/base",
                "bias": "none", "fan_in_fan_out": False, "use_dora": False, "init_lora_weights": True,
                "inference_mode": True, "modules_to_save": None, "layers_to_transform": None}
    assert {k: config[k] for k in expected} == expected
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
    assert len(keys) == 8
    a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    b = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    assert a in keys and b in keys
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert torch.equal(saved[a], model.model.layers[0].self_attn.q_proj.lora_A.weight)
    assert saved[b].shape == (4, 2)


def test_load_into_fresh_model_reproduces_the_adapter(tmp_path):
    model = saved_toy(tmp_path, use_rslora=True)
    fresh = Toy()
    summary = load_adapter(fresh, tmp_path)
    assert summary.config == model.lora_config
    for name, p in lora_state_dict(model).items():
        assert torch.equal(lora_state_dict(fresh)[name], p), name


def tamper_weights(tmp_path, edit):
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def tamper_config(tmp_path, **changes):
    path = tmp_path / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def test_missing_key_is_an_error_naming_it(tmp_path):
    saved_toy(tmp_path)
    tamper_weights(tmp_path, lambda t: t.pop(KEY))
    with pytest.raises(ValueError, match="1 missing, first 'base_model.model.model.layers.0.self_attn.q_proj.lora_A"):
        load_adapter(Toy(), tmp_path)


def test_unexpected_key_is_an_error_naming_it(tmp_path):
    saved_toy(tmp_path)
    tamper_weights(tmp_path, lambda t: t.update({"base_model.model.extra.lora_A.weight": torch.zeros(2, 8)}))
    with pytest.raises(ValueError, match="unexpected, first 'base_model.model.extra.lora_A.weight'"):
        load_adapter(Toy(), tmp_path)


def test_wrong_prefix_is_an_error_not_a_silent_no_op(tmp_path):
    saved_toy(tmp_path)
    tamper_weights(tmp_path, lambda t: [t.update({k.replace("base_model.model.", ""): t.pop(k)}) for k in list(t)])
    with pytest.raises(ValueError, match="8 missing.*8 unexpected"):
        load_adapter(Toy(), tmp_path)


def test_failed_load_leaves_the_model_as_it_was(tmp_path):
    saved_toy(tmp_path)
    tamper_weights(tmp_path, lambda t: t.pop(KEY))
    model = Toy()
    before = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match="missing"):
        load_adapter(model, tmp_path)
    assert [type(m) for m in model.modules()] == before
    assert not hasattr(model, "lora_config")
    assert all(p.requires_grad for p in model.parameters())


def test_wrong_shape_is_an_error_with_both_shapes(tmp_path):
    saved_toy(tmp_path)
    tamper_weights(tmp_path, lambda t: t.update({KEY: torch.zeros(2, 7)}))
    with pytest.raises(ValueError, match=r"q_proj.lora_A.weight' expected shape \(2, 8\).*found \(2, 7\)"):
        load_adapter(Toy(), tmp_path)


def test_rank_different_from_the_models_adapters_is_an_error(tmp_path):
    saved_toy(tmp_path)
    model = Toy()
    inject_lora(model, r=4, alpha=4, targets=("q_proj", "v_proj"))
    with pytest.raises(ValueError, match="'r' expected 4.*found 2"):
        load_adapter(model, tmp_path)


@pytest.mark.parametrize("changes, message", [
    ({"peft_type": "IA3"}, "'peft_type' expected 'LORA', found 'IA3'"),
    ({"use_dora": True}, "'use_dora' expected one of"),
    ({"modules_to_save": ["lm_head"]}, "'modules_to_save'"),
    ({"target_modules": ".*q_proj"}, "'target_modules' expected a list"),
])
def test_unsupported_config_is_an_error_naming_the_key(tmp_path, changes, message):
    saved_toy(tmp_path)
    tamper_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        load_adapter(Toy(), tmp_path)


def test_config_target_absent_from_model_is_an_error(tmp_path):
    saved_toy(tmp_path)
    tamper_config(tmp_path, target_modules=["q_proj", "v_proj", "up_proj"])
    with pytest.raises(ValueError, match="up_proj.*match no module"):
        load_adapter(Toy(), tmp_path)


def test_loading_into_a_merged_model_is_an_error(tmp_path):
    model = saved_toy(tmp_path)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        load_adapter(model, tmp_path)


def test_saving_a_model_without_adapters_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="inject_lora"):
        save_adapter(Toy(), tmp_path)
