"""The frozen encoder: the Qwen3-Embedding recipe, against the same recipe computed with transformers."""

import pytest
import torch
import torch.nn.functional as F

from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import Encoder, load_encoder
from minigrpo.models.encoder import format_query, pool

TEXTS = ["What is the capital of France?", "Explain gravity",
         "The heart pumps blood through the body, about seventy times a minute."]
TASK = "Given a web search query, retrieve relevant passages that answer the query"


@pytest.fixture(scope="module")
def embedding_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_embedding"), arch="qwen3-embedding")


@pytest.fixture(scope="module")
def encoder(embedding_checkpoint):
    return load_encoder(embedding_checkpoint)


def _transformers_recipe(path, texts, dim=None):
    """Qwen3-Embedding's official usage: left padding, AutoModel, last token, (truncate), L2-normalize."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), padding_side="left",
                                               pad_token="<|endoftext|>")
    batch = tok(texts, padding=True, truncation=True, max_length=8192, return_tensors="pt")
    model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        last = model(**batch).last_hidden_state[:, -1]
    return F.normalize(last[:, :dim] if dim else last, p=2, dim=1)


def test_embeddings_equal_the_transformers_recipe(embedding_checkpoint, encoder, record_max_diff):
    diff = (encoder.embed(TEXTS) - _transformers_recipe(embedding_checkpoint, TEXTS)).abs().max().item()
    record_max_diff("qwen3-embedding embeddings fp32", diff)
    assert diff <= 1e-5
    queries = [format_query(t, TASK) for t in TEXTS[:2]]
    diff = (encoder.embed(TEXTS[:2], instruction=TASK, dim=16)
            - _transformers_recipe(embedding_checkpoint, queries, dim=16)).abs().max().item()
    record_max_diff("qwen3-embedding embeddings fp32 (instruct, dim 16)", diff)
    assert diff <= 1e-5


def test_query_prompt_has_a_newline_and_no_space_after_query():
    assert format_query("hi", "find it") == "Instruct: find it\nQuery:hi"


def test_tokenizer_post_processor_appends_endoftext_which_is_pooled(encoder):
    ids, mask = encoder.tokenizer.batch_encode(TEXTS, padding_side="left")
    endoftext = encoder.tokenizer.token_to_id("<|endoftext|>")
    assert (ids[:, -1] == endoftext).all() and (mask[:, -1] == 1).all()


def test_embeddings_are_float32_unit_norm_and_truncated_before_normalizing(encoder):
    full = encoder.embed(TEXTS)
    assert full.dtype == torch.float32 and full.shape == (3, encoder.config.hidden_size)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(3))
    short = encoder.embed(TEXTS, dim=8)
    # normalize(e[:, :8]), not normalize(e)[:, :8]
    torch.testing.assert_close(short, F.normalize(full[:, :8], dim=1), atol=1e-6, rtol=0)


def test_embedding_does_not_depend_on_batch_size_or_order(encoder):
    one_by_one = torch.cat([encoder.embed([t]) for t in TEXTS])
    torch.testing.assert_close(encoder.embed(TEXTS, batch_size=2), one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.embed(TEXTS[::-1]).flip(0), one_by_one, atol=1e-5, rtol=0)


def test_pooling_by_hand_for_left_and_right_padding():
    h = torch.arange(12.0).view(2, 3, 2)  # (B, T, C)
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(h, left, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert pool(h, right, "last").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    # mean of rows 1 and 2 of batch 0: ((2 + 4) / 2, (3 + 5) / 2)
    assert pool(h, left, "mean").tolist() == [[3.0, 4.0], [8.0, 9.0]]


def test_mean_pooling_encoder_gives_masked_mean_of_hidden_states(embedding_checkpoint):
    enc = load_encoder(embedding_checkpoint, pooling="mean")
    ids, mask = enc.tokenizer.batch_encode(TEXTS[:2], padding_side="left")
    h = enc.hidden_states(ids, mask)
    expected = torch.stack([h[b, mask[b].bool()].mean(0) for b in range(2)])
    torch.testing.assert_close(enc.embed(TEXTS[:2]), F.normalize(expected, dim=1), atol=1e-6, rtol=0)


def test_encoder_is_frozen_and_in_eval_mode(encoder):
    assert isinstance(encoder, Encoder) and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.embed(TEXTS[:1]).requires_grad


def test_causal_lm_checkpoint_also_works_as_encoder(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="qwen3", tie_word_embeddings=False)  # stores model.* and lm_head
    enc = load_encoder(path)
    assert not hasattr(enc.model, "lm_head")
    assert enc.embed(["hello"]).shape == (1, 64)


def test_unknown_pooling_and_bad_dim_are_rejected(embedding_checkpoint, encoder):
    with pytest.raises(ValueError, match="unknown pooling 'cls'"):
        load_encoder(embedding_checkpoint, pooling="cls")
    with pytest.raises(ValueError, match="dim must be between 1 and hidden_size 64, found 65"):
        encoder.embed(TEXTS, dim=65)


def test_default_max_length_is_the_models_context(tmp_path):
    # a text far longer than the model's 32 positions is embedded as its first 32 tokens, <|endoftext|> kept
    path = make_tiny_checkpoint(tmp_path, arch="qwen3-embedding", max_position_embeddings=32)
    enc = load_encoder(path)
    assert enc.max_length == 32
    long_text = " ".join(["the heart pumps blood"] * 40)
    ids, mask = enc.tokenizer.batch_encode([long_text], max_length=32)
    assert ids.shape == (1, 32) and ids[0, -1] == enc.tokenizer.token_to_id("<|endoftext|>")
    expected = F.normalize(enc.hidden_states(ids, mask)[:, -1], dim=1)
    torch.testing.assert_close(enc.embed([long_text]), expected, atol=1e-6, rtol=0)


def test_cls_pooling_takes_the_first_real_token_on_either_padding_side():
    h = torch.arange(12.0).view(2, 3, 2)  # (B, T, C)
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(h, left, "cls").tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert pool(h, right, "cls").tolist() == [[0.0, 1.0], [6.0, 7.0]]


def test_pooling_defaults_to_last_token_unless_a_sentence_transformers_folder_says_otherwise(tmp_path):
    assert load_encoder(make_tiny_checkpoint(tmp_path / "plain", arch="qwen3-embedding")).pooling == "last"
    # an old-style folder: the model under 0_Transformer, mean pooling in 1_Pooling, max_seq_length 20
    make_tiny_checkpoint(tmp_path / "st" / "0_Transformer", arch="qwen3-embedding")
    (tmp_path / "st" / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 20}')
    (tmp_path / "st" / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "st" / "1_Pooling").mkdir()
    (tmp_path / "st" / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    enc = load_encoder(tmp_path / "st")
    assert (enc.pooling, enc.max_length, enc.padding_side) == ("mean", 20, "left")
    assert load_encoder(tmp_path / "st", pooling="last").pooling == "last"
