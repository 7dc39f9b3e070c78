"""Chat templates: render a checkpoint's own Jinja template the way transformers does, without transformers.

A chat template turns a list of messages ({"role": ..., "content": ...}) into the one string the model was
fine-tuned on. The template ships with the checkpoint (tokenizer_config.json "chat_template", or a separate
chat_template.jinja file), so rendering it faithfully matters more than any template of our own.

transformers (`apply_chat_template`) renders with exactly this setup, copied here:

    jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                 extensions=[jinja2.ext.loopcontrols])
    filter  tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) = json.dumps(...)
            (Jinja's own tojson escapes <, >, & as \\u003c..., which would change the prompt)
    globals raise_exception(msg) -> TemplateError, strftime_now(fmt) = datetime.now().strftime(fmt)
    vars    messages, add_generation_prompt, tools, documents, the special-token strings that the
            checkpoint sets (bos_token, eos_token, unk_token, pad_token, ...) and every extra keyword
            (e.g. enable_thinking=False for Qwen3); an extra keyword overrides a special-token string.

Before rendering, messages are normalised as transformers does: keys whose value is None are dropped, and a
reasoning text given as "reasoning_content", "thinking" or "reasoning" is copied under the other two names.

The rendered text already contains every special token the model expects (a BOS included), so it must be
tokenised with add_special_tokens=False: see Tokenizer.encode_chat.
"""

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

# The template used when a checkpoint has none. For [system "S", user "U"] + generation prompt it renders
#     {bos_token}<|system|>\nS\n<|user|>\nU\n<|assistant|>\n
# i.e. the BOS string (when the tokenizer has one), then per message "<|role|>\n" + content + "\n",
# then "<|assistant|>\n" as the cue to answer. Role markers are plain text, not special tokens.
DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token is defined and bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compile a Jinja chat template in transformers' sandboxed environment (cached per source string)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template is not valid Jinja (template line {e.lineno}): {e.message}") from e


def normalize_messages(messages) -> list[dict]:
    """Copy messages as transformers does before rendering: drop None values, alias the reasoning field."""
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of dicts, found {type(messages).__name__}")
    if len(messages) == 0:
        raise ValueError("cannot apply a chat template to an empty conversation")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', found {message!r}")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            # Templates read "reasoning_content" (Qwen3) or "thinking" (gpt-oss); accept any of the three names.
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def render_chat_template(source: str, messages, *, add_generation_prompt: bool = False, tools=None,
                         documents=None, special_tokens: dict | None = None, **kwargs) -> str:
    """Render `messages` with the Jinja template `source`, byte-identical to transformers' apply_chat_template.

    special_tokens: {"bos_token": "<s>", ...} for the tokens the checkpoint sets (None values are left out).
    kwargs: extra template variables (e.g. enable_thinking=False); they override special-token strings.
    """
    template = compile_chat_template(source)
    variables = {k: v for k, v in (special_tokens or {}).items() if v is not None}
    variables.update(kwargs)
    return template.render(messages=normalize_messages(messages), tools=tools, documents=documents,
                           add_generation_prompt=add_generation_prompt, **variables)
