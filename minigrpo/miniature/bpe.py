"""Train a small byte-level BPE tokenizer and write it in the Hugging Face file format.

Real checkpoints come with tokenizers of 128k-152k tokens; tests and laptop examples use tiny random models,
which need a tiny tokenizer that behaves like the real one in every way that matters to the code around it:
the same file format (tokenizer.json + tokenizer_config.json), the same kind of BOS/EOS handling and the same
chat template shape. Three styles are written:

    "llama"            DeepSeek-R1-Distill-Llama-like: the post-processor PREPENDS <｜begin▁of▁sentence｜> to
                       every sequence (add_bos_token true); eos = pad = <｜end▁of▁sentence｜>; the added tokens
                       <｜User｜>, <｜Assistant｜>, <think>, </think> are "special": false (decode keeps them);
                       the DeepSeek-R1 chat template.
    "qwen3"            Qwen3-like: no BOS; eos <|im_end|>, pad <|endoftext|>; <|im_start|>, <|im_end|>,
                       <|endoftext|> special, <think>, </think> not special; a ChatML template.
    "qwen3-embedding"  like "qwen3" but the post-processor APPENDS <|endoftext|> to every sequence, as
                       Qwen3-Embedding's tokenizer does (the encoder pools that last token).

The model is byte-level BPE as in GPT-2/Llama-3/Qwen: text is split into words by the ByteLevel regex, each byte
mapped to one of 256 printable characters, and merges learned greedily: repeatedly merge the most frequent
adjacent pair until the vocabulary reaches vocab_size (fewer when the text runs out of pairs). The added tokens
take ids 0..k-1, then the 256 byte symbols, then the merges.
"""

import json
from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from ..models.tokenizer import Tokenizer, load_tokenizer
from .chat_templates import DEEPSEEK_R1_CHAT_TEMPLATE, QWEN3_CHAT_TEMPLATE

STYLES = ("llama", "qwen3", "qwen3-embedding")

# Per style: added tokens in id order with their "special" flag, the named special tokens, the template.
_LLAMA_TOKENS = [("<｜begin▁of▁sentence｜>", True), ("<｜end▁of▁sentence｜>", True),
                 ("<｜User｜>", False), ("<｜Assistant｜>", False), ("<think>", False), ("</think>", False)]
_QWEN3_TOKENS = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                 ("<think>", False), ("</think>", False)]
_STYLE = {
    "llama": dict(tokens=_LLAMA_TOKENS, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>",
                  pad="<｜end▁of▁sentence｜>", template=DEEPSEEK_R1_CHAT_TEMPLATE),
    "qwen3": dict(tokens=_QWEN3_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                  template=QWEN3_CHAT_TEMPLATE),
    "qwen3-embedding": dict(tokens=_QWEN3_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                            template=QWEN3_CHAT_TEMPLATE),
}

# Deterministic English for write_tiny_tokenizer: enough distinct words for a few hundred merges, and the
# shapes the project's prompts contain (options A-E, numbers, reasoning / answer tags).
_TINY_TEXT = """\
The quick brown fox jumps over the lazy dog. A model reads a question, thinks step by step, and then answers.
Question: Which organ pumps blood through the human body? Options: A) the liver B) the heart C) the lungs
D) the kidney E) the stomach. Answer: B. The heart is a muscle that contracts about seventy times a minute.
Question: What is the capital of France? A) Berlin B) Madrid C) Paris D) Rome E) Lisbon. Answer: C.
<think>The user asks about a capital city. Paris is the capital of France.</think> The answer is C.
<reasoning>Water boils at one hundred degrees Celsius at sea level.</reasoning>
<explanation>Pressure changes the boiling point of a liquid.</explanation><answer>A</answer>
Reinforcement learning rewards a policy for good completions. Group relative policy optimization compares
several completions of the same prompt and pushes up those that score above the group mean.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 25 50 100 256 1024 3.14 2.71 42.
In the morning the students walked to the library to study chemistry, physics, biology and mathematics.
Enzymes are proteins that speed up chemical reactions without being consumed. Cells divide by mitosis.
Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts.
Newton's second law states that force equals mass times acceleration. Energy is conserved in a closed system.
The patient reported a headache, fever and fatigue; the doctor ordered a blood test and prescribed rest.
"Hello, world!" she said. 'Good night,' he replied; (then) [they] {left} - quickly & quietly: 100% sure?
"""


def train_bpe_tokenizer(texts, out_dir, vocab_size: int, *, special_tokens=None, chat_template: str | None = None,
                        style: str = "llama", add_bos: bool | None = None, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts` and write out_dir/tokenizer.json and out_dir/tokenizer_config.json.

    vocab_size: target size including the added tokens and the 256 byte symbols; the result is smaller when the
        texts run out of pairs seen at least min_frequency times (the returned Tokenizer.vocab_size is exact).
    special_tokens: extra special tokens (strings) added after the style's own.
    chat_template: Jinja source written to tokenizer_config.json; None = the style's template.
    add_bos: "llama" style only; False drops the BOS-prepending post-processor (None = the style's default).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, found {style!r}")
    spec = _STYLE[style]
    if add_bos is None:
        add_bos = spec["bos"] is not None
    if add_bos and spec["bos"] is None:
        raise ValueError(f"add_bos=True needs a BOS token, and style {style!r} has none")
    added = list(spec["tokens"]) + [(t, True) for t in (special_tokens or ()) if t not in dict(spec["tokens"])]
    if vocab_size < len(added) + 256:
        raise ValueError(f"vocab_size must be at least {len(added) + 256} (added tokens + 256 bytes), "
                         f"found {vocab_size}")
    if isinstance(texts, str):
        texts = [texts]

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=[AddedToken(t, special=True, normalized=False) for t, _ in added],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)

    bos_id = tok.token_to_id(spec["bos"]) if spec["bos"] else None
    if style == "llama" and add_bos:
        # As Llama-3: one BOS before each sequence of the pair.
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']}:0 $A:0", pair=f"{spec['bos']}:0 $A:0 {spec['bos']}:1 $B:1",
            special_tokens=[(spec["bos"], bos_id)])
    elif style == "qwen3-embedding":
        eot = "<|endoftext|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {eot}:0", pair=f"$A:0 {eot}:0 $B:1 {eot}:1", special_tokens=[(eot, tok.token_to_id(eot))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # The trainer adds every token as special; the role markers and <think> tags are ordinary added tokens in the
    # real checkpoints (decode(skip_special_tokens=True) keeps them), so clear that flag in the saved JSON.
    data = json.loads(tok.to_str())
    flags = dict(added)
    for entry in data["added_tokens"]:
        entry["special"] = flags[entry["content"]]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    config = {
        "add_bos_token": bool(add_bos),
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(e["id"]): {k: e[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for e in data["added_tokens"]},
        "bos_token": spec["bos"],
        "chat_template": chat_template if chat_template is not None else spec["template"],
        "clean_up_tokenization_spaces": False,
        "eos_token": spec["eos"],
        "model_max_length": 131072 if style == "llama" else 32768,
        "pad_token": spec["pad"],
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                                   encoding="utf-8")
    return load_tokenizer(out_dir)


def write_tiny_tokenizer(out_dir, style: str = "llama", vocab_size: int = 512) -> Tokenizer:
    """Write a tiny deterministic tokenizer of `style` to out_dir, trained on a built-in English text.

    The same arguments always give byte-identical files. The default vocab_size is reached exactly.
    """
    return train_bpe_tokenizer([_TINY_TEXT], out_dir, vocab_size, style=style, min_frequency=1)
