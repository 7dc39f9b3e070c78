"""save_model (minigrpo/models/saving.py): a saved folder loads back bit for bit, in minigrpo and in transformers."""

import json

import pytest
import torch
from safetensors import safe_open

import minigrpo.models.saving as saving
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_body, load_causal_lm, load_encoder, save_model
from minigrpo.models.encoder import Encoder

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7], [1, 2, 3, 4, 5, 6, 7]])  # (B=2, T=7), inside the tiny vocab


def _perturb_(module, seed):
    """Move every weight off its checkpoint value, so a reload that silently fell back to the source would fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # a tied head is listed once, so it moves with embed_tokens
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return module


def _keys(path):
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return set(f.keys()), f.metadata()


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def saved(request, tmp_path_factory):
    """(source folder, saved folder, perturbed model) for an untied llama and a tied qwen3 tiny checkpoint."""
    arch = request.param
    src = make_tiny_checkpoint(tmp_path_factory.mktemp(f"src_{arch}"), arch=arch, seed=3)
    model = _perturb_(load_causal_lm(src), seed=4)
    out = tmp_path_factory.mktemp(f"saved_{arch}") / "ckpt"
    assert save_model(model, out, src / "config.json", tokenizer_dir=src) == out
    return src, out, model


def test_reload_gives_identical_logits(saved):
    _, out, model = saved
    with torch.no_grad():
        assert torch.equal(load_causal_lm(out)(IDS), model(IDS))


def test_saved_weights_are_the_perturbed_ones_not_the_source(saved):
    src, out, model = saved
    with torch.no_grad():
        assert not torch.equal(load_causal_lm(src)(IDS), model(IDS))
    reloaded = load_causal_lm(out).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded[name], value), name


def test_tied_head_is_stored_once_and_untied_head_is_stored(saved):
    _, out, model = saved
    keys, metadata = _keys(out)
    assert metadata == {"format": "pt"}
    assert "model.embed_tokens.weight" in keys
    assert ("lm_head.weight" in keys) == (not model.config.tie_word_embeddings)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    assert keys == expected
    reloaded = load_causal_lm(out)
    if model.config.tie_word_embeddings:
        assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight


def test_config_and_tokenizer_files_are_copied(saved):
    src, out, _ = saved
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    assert not out.with_name(out.name + ".tmp").exists()


def test_transformers_loads_the_saved_folder_with_the_same_logits(saved, record_max_diff):
    transformers = pytest.importorskip("transformers")
    _, out, model = saved
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (hf(IDS).logits - model(IDS)).abs().max().item()
    record_max_diff(f"saved {model.config.model_type} logits vs transformers", diff)
    assert diff <= 1e-5


def test_config_given_as_a_dict_is_written_as_config_json(tmp_path):
    src = make_tiny_checkpoint(tmp_path / "src", arch="llama")
    config = json.loads((src / "config.json").read_text())
    out = save_model(load_causal_lm(src), tmp_path / "out", config)
    assert json.loads((out / "config.json").read_text()) == config
    assert not (out / "tokenizer.json").exists()  # no tokenizer_dir, no tokenizer files


def test_saving_over_the_source_folder_replaces_it(tmp_path):
    # config and tokenizer are read from the folder being replaced: they must be taken before it is removed
    src = make_tiny_checkpoint(tmp_path / "ckpt", arch="qwen3")
    model = _perturb_(load_causal_lm(src), seed=5)
    save_model(model, src, src / "config.json", tokenizer_dir=src)
    assert (src / "tokenizer.json").exists()
    with torch.no_grad():
        assert torch.equal(load_causal_lm(src)(IDS), model(IDS))


def test_failed_save_leaves_the_existing_folder_intact(tmp_path, monkeypatch):
    src = make_tiny_checkpoint(tmp_path / "src", arch="llama")
    out = save_model(load_causal_lm(src), tmp_path / "out", src / "config.json", tokenizer_dir=src)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saving, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_model(_perturb_(load_causal_lm(src), seed=6), out, src / "config.json", tokenizer_dir=src)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bare_body_saves_without_prefix_and_reloads_as_an_encoder(tmp_path):
    src = make_tiny_checkpoint(tmp_path / "src", arch="qwen3-embedding", seed=7)
    body = _perturb_(load_body(src), seed=8)
    out = save_model(body, tmp_path / "out", src / "config.json", tokenizer_dir=src)
    keys, _ = _keys(out)
    assert keys == set(body.state_dict())
    assert not any(k.startswith("model.") or k == "lm_head.weight" for k in keys)
    reloaded = load_encoder(out)
    expected = Encoder(body, reloaded.tokenizer)
    texts = ["The heart pumps blood.", "Rivers run to the sea"]
    assert torch.equal(reloaded.embed(texts), expected.embed(texts))
