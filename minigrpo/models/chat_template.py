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

# DeepSeek-R1-Distill's template (Hub version of 2025-02-24), plain-chat branches only (its tool-call branches
# are left out): BOS, the last system prompt raw, "<｜User｜>" + content, "<｜Assistant｜>" + the content after
# its last "</think>" + EOS, and "<｜Assistant｜><think>\n" as generation prompt. The bars are fullwidth (U+FF5C)
# and the spaces are U+2581, as in the real vocabulary.
DEEPSEEK_R1_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}"
    "{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)

# A ChatML template modelled on Qwen3's: "<|im_start|>{role}\n{content}<|im_end|>\n" per message; an assistant
# turn after the last user query keeps its reasoning as "<think>\n...\n</think>\n\n", earlier ones drop it;
# the generation prompt is "<|im_start|>assistant\n", followed by an empty "<think>\n\n</think>\n\n" when
# enable_thinking=False is passed.
QWEN3_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


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
