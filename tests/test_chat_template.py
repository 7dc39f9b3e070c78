"""Chat templates (minigrpo/models/chat_template.py): byte-identical rendering and ids against transformers'
apply_chat_template on the same files, the built-in template, template file precedence."""

import json

import jinja2
import pytest

from minigrpo.miniature.bpe import train_bpe_tokenizer, write_tiny_tokenizer
from minigrpo.miniature.chat_templates import DEEPSEEK_R1_CHAT_TEMPLATE, QWEN3_CHAT_TEMPLATE
from minigrpo.models.chat_template import DEFAULT_CHAT_TEMPLATE, render_chat_template
from minigrpo.models.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

CHATS = {
    "user_only": [{"role": "user", "content": "hi"}],
    "system_user": [{"role": "system", "content": "Answer with a letter."},
                    {"role": "user", "content": "Which is the heart? A) liver B) heart"}],
    "multi_turn_with_reasoning": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3? Ünïcödé, <tags> & \"quotes\""},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "reasoning_content": "greet back", "tool_calls": None},
    ],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    out = {style: root / style for style in ("llama", "qwen3")}
    for style, folder in out.items():
        write_tiny_tokenizer(folder, style=style)
    # Without a template: the built-in one is used.
    train_bpe_tokenizer(["a tiny text for a tokenizer without a chat template"], root / "none", 300,
                        style="llama")
    cfg_file = root / "none" / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    del cfg["chat_template"]
    cfg_file.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    out["none"] = root / "none"
    return out


def hf_ids(hf, messages, **kw):
    ids = hf.apply_chat_template(messages, tokenize=True, **kw)
    return ids if isinstance(ids, list) else list(ids["input_ids"])


@pytest.mark.parametrize("chat", sorted(CHATS))
@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("style", ["llama", "qwen3"])
def test_rendering_and_ids_match_transformers(folders, style, chat, gen):
    tok = load_tokenizer(folders[style])
    hf = transformers.AutoTokenizer.from_pretrained(str(folders[style]))
    messages = CHATS[chat]
    kwargs = [{}] if style == "llama" else [{}, {"enable_thinking": False}, {"enable_thinking": True}]
    for kw in kwargs:
        expected = hf.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False, **kw)
        assert tok.apply_chat_template(messages, add_generation_prompt=gen, **kw) == expected
        assert tok.encode_chat(messages, add_generation_prompt=gen, **kw) == hf_ids(
            hf, messages, add_generation_prompt=gen, **kw)


def test_deepseek_r1_generation_prompt_matches_the_documented_example(folders):
    tok = load_tokenizer(folders["llama"])
    assert tok.chat_templates["default"] == DEEPSEEK_R1_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == f"{BOS}<｜User｜>hi<｜Assistant｜><think>\n"


def test_deepseek_r1_strips_reasoning_and_keeps_last_system_prompt(folders):
    tok = load_tokenizer(folders["llama"])
    messages = [{"role": "system", "content": "old"}, {"role": "system", "content": "S"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "<think>a</think>b</think>answer"}]
    assert tok.apply_chat_template(messages) == f"{BOS}S<｜User｜>q<｜Assistant｜>answer{EOS}"


def test_encode_chat_has_exactly_one_bos(folders):
    tok = load_tokenizer(folders["llama"])
    ids = tok.encode_chat([{"role": "user", "content": "hi"}])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    # encode() with the default add_special_tokens=True would double it: that is why encode_chat exists
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert tok.encode(text)[:2] == [tok.bos_token_id, tok.bos_token_id]


def test_qwen3_enable_thinking_false_adds_empty_think_block(folders):
    tok = load_tokenizer(folders["qwen3"])
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   enable_thinking=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_builtin_template_shape_when_checkpoint_has_none(folders):
    tok = load_tokenizer(folders["none"])
    assert not tok.has_chat_template
    messages = CHATS["system_user"]
    text = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert text == (f"{BOS}<|system|>\nAnswer with a letter.\n<|user|>\nWhich is the heart? A) liver B) heart\n"
                    "<|assistant|>\n")
    hf = transformers.AutoTokenizer.from_pretrained(str(folders["none"]))
    for gen in (False, True):
        kw = dict(add_generation_prompt=gen, chat_template=DEFAULT_CHAT_TEMPLATE)
        assert tok.apply_chat_template(messages, add_generation_prompt=gen) == hf.apply_chat_template(
            messages, tokenize=False, **kw)
        assert tok.encode_chat(messages, add_generation_prompt=gen) == hf_ids(hf, messages, **kw)


def test_builtin_template_without_bos_token_starts_with_first_role():
    text = render_chat_template(DEFAULT_CHAT_TEMPLATE, [{"role": "user", "content": "x"}],
                                special_tokens={"bos_token": None, "eos_token": "<e>"})
    assert text == "<|user|>\nx\n"


def test_tojson_is_not_html_escaped_and_keeps_unicode():
    template = "{{ messages[0] | tojson }}|{{ tools | tojson(indent=2) }}"
    messages = [{"role": "user", "content": "<b> & é"}]
    out = render_chat_template(template, messages, tools=[{"name": "f"}])
    assert out == '{"role": "user", "content": "<b> & é"}|[\n  {\n    "name": "f"\n  }\n]'


def test_tools_rendering_matches_transformers(folders):
    tok = load_tokenizer(folders["qwen3"])
    hf = transformers.AutoTokenizer.from_pretrained(str(folders["qwen3"]))
    tools = [{"type": "function", "function": {"name": "add", "description": "Add two numbers, e.g. <1> & <2>",
                                               "parameters": {"type": "object", "properties": {}}}}]
    messages = CHATS["system_user"] + [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
        {"role": "tool", "content": "3"}]
    expected = hf.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    assert tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True) == expected


def test_raise_exception_global_raises_template_error():
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok"
    assert render_chat_template(template, [{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(jinja2.exceptions.TemplateError, match="first must be user"):
        render_chat_template(template, [{"role": "system", "content": "x"}])


def test_extra_kwargs_override_special_token_strings():
    out = render_chat_template("{{ bos_token }}{{ messages[0].content }}", [{"role": "user", "content": "x"}],
                               special_tokens={"bos_token": "<s>"}, bos_token="[B]")
    assert out == "[B]x"


def test_chat_template_jinja_file_wins_over_config_entry(folders, tmp_path):
    folder = tmp_path / "t"
    write_tiny_tokenizer(folder, style="qwen3")
    (folder / "chat_template.jinja").write_text("{{ 'FILE:' + messages[0].content }}", encoding="utf-8")
    tok = load_tokenizer(folder)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    messages = [{"role": "user", "content": "x"}]
    assert tok.apply_chat_template(messages) == "FILE:x" == hf.apply_chat_template(messages, tokenize=False)


def test_named_template_list_picks_default_or_tool_use(tmp_path):
    folder = tmp_path / "t"
    write_tiny_tokenizer(folder, style="qwen3")
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["chat_template"] = [{"name": "default", "template": "D{{ messages[0].content }}"},
                            {"name": "tool_use", "template": "T{{ messages[0].content }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    tok = load_tokenizer(folder)
    messages = [{"role": "user", "content": "x"}]
    assert tok.apply_chat_template(messages) == "Dx"
    assert tok.apply_chat_template(messages, tools=[{"name": "f"}]) == "Tx"
    assert tok.apply_chat_template(messages, chat_template="tool_use") == "Tx"


def test_invalid_template_and_messages_give_clear_errors():
    with pytest.raises(ValueError, match="not valid Jinja"):
        render_chat_template("{% for %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="empty conversation"):
        render_chat_template(QWEN3_CHAT_TEMPLATE, [])
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        render_chat_template(QWEN3_CHAT_TEMPLATE, [{"role": "user", "content": "x"}, "oops"])
