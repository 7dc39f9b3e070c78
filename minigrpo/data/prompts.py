"""From an MCQ item to the policy's prompt text and to its SFT target.

A prompt is a chat: a system turn (a short role line, then the completion format's instructions) and a user
turn with the question and its lettered options,

    Which part of the cell is in charge of making energy?
    A) ribosome
    B) mitochondrion
    ...

rendered by the tokenizer's chat template with the generation prompt appended, so the text ends where the
assistant's reply begins. DeepSeek-R1 checkpoints recommend no system prompt; `system_in_user=True` puts the
same text at the top of the user turn instead.

The SFT target is the completion the format's parser reads back: reasoning, the first reference explanation,
and the gold letter.
"""

DEFAULT_SYSTEM_PROMPT = "You are a tutor answering multiple-choice questions."


def format_question(item):
    """The question followed by one "L) text" line per option, in letter order."""
    lines = [item.question.strip()]
    lines += [f"{letter}) {text.strip()}" for letter, text in item.options.items()]
    return "\n".join(lines)


def build_messages(item, fmt, system_prompt=DEFAULT_SYSTEM_PROMPT, system_in_user=False):
    """The chat messages of the prompt: [system, user], or [user] alone when `system_in_user`.

    The system text is `system_prompt` (left out when empty or None) followed by `fmt.instructions()`.
    """
    system = "\n\n".join(part for part in (system_prompt, fmt.instructions()) if part)
    question = format_question(item)
    if system_in_user:
        return [{"role": "user", "content": f"{system}\n\n{question}"}]
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def render_prompt(item, tokenizer, fmt, system_prompt=DEFAULT_SYSTEM_PROMPT, system_in_user=False):
    """The prompt text for `item`: its chat messages through `tokenizer.apply_chat_template`, ending with the
    generation prompt. Tokenise the result without special tokens: the template already wrote any BOS."""
    messages = build_messages(item, fmt, system_prompt=system_prompt, system_in_user=system_in_user)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"render_prompt: expected apply_chat_template to return the prompt text (str), found "
                        f"{type(text).__name__}; a transformers tokenizer needs tokenize=False")
    return text


def sft_target(item, fmt, reasoning):
    """The completion SFT teaches for `item`: fmt.render(reasoning, first reference explanation, gold letter)."""
    return fmt.render(reasoning, item.explanations[0], item.answer)
