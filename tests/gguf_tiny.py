"""Tiny GGUF files for the tests, written by ggml's own `gguf` package the way llama.cpp's converter writes a
real model: Hugging Face tensors renamed, Llama's q/k rows permuted for llama.cpp's paired RoPE, weights quantized
(Q4_1, Q4_0, Q8_0) or stored as F32 / F16 / BF16, and a byte-level BPE tokenizer (vocabulary, merges, token
types, special ids, chat template) trained here on a few lines of varied text.

write_tiny_gguf returns the Hugging Face state dict the file stands for, with every quantized weight replaced by
its dequantized value: the exact tensors a correct reader must give back.
"""

import json

import numpy as np
import torch

gguf = __import__("pytest").importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

SHAPE = dict(hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=96, layers=2)  # rows of 64 and 96: whole blocks
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # control tokens 0, 1, 2
USER_DEFINED = "<think>"                                      # a user-defined token, last id
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 123 1234 2024 3.14159 1,000,000",
    "Accents: café, naïve, résumé, Ñandú, Straße, façade, déjà vu.",
    "日本語のテキスト。中文文本。한국어 텍스트.",
    "Emoji: 😀 👍🏽 🎉 ❤️ and more 😀😀.",
    "def square(x):\n    return x ** 2  # comment\n\tif x > 0: pass\n",
    "Spaces   and\ttabs\t\tand\n\nnewlines   here.  It's, we've, I'LL, don't.",
]
# Texts whose ids must agree: digit runs, whitespace runs and tabs, accents, CJK, emoji, code, the special and
# user-defined tokens written in the text, contractions; several with pieces the corpus never showed.
TEXTS = [
    "Hello world", "The year 2024 had 366 days; 1234567890 + 42 = 1234567932.", "3.14159 and 1,000,000",
    "a  b   c\t\td\n\n\ne  \n  x", "   leading and trailing   ", "\t\ttabs\tonly\t",
    "café naïve résumé Ñandú Straße ÀÉÎÕÜ", "日本語のテキスト、中文文本，한국어", "emoji 😀👍🏽🎉 ❤️ 🧑‍💻!",
    "def square(x):\n    return x ** 2  # comment\n", "if (a[i] != b->c) { return {'k': \"v\"}; }",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", "<think>why</think> because",
    "It's, we've, I'LL, don't",
]

# llama.cpp's per-layer tensor names -> Hugging Face module names
LAYER_TENSORS = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj",
                 "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
# the types written where not the default: Q4_1 for a matrix, F32 for a vector
TYPES = {"token_embd.weight": Q.Q8_0, "output.weight": Q.Q8_0, "blk.0.attn_v.weight": Q.Q4_0,
         "blk.1.attn_v.weight": Q.F16, "blk.1.ffn_up.weight": Q.BF16}


def train_vocab(vocab_size=400):
    """(tokens by id, merges as "a b" strings, token types) of a byte-level BPE trained on CORPUS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1])] + [USER_DEFINED]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIALS else 4 if t == USER_DEFINED else 1 for t in tokens]
    return tokens, merges, types


def permute(w, n_heads):
    """llama.cpp's convert_hf_to_gguf.py permutation of q/k rows: (H, 2, D/2, ...) -> (H, D/2, 2, ...)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_back(w, n_heads):
    """The inverse of `permute`, written independently: gather row h*D + t*D/2 + i from h*D + 2*i + t."""
    rows = w.shape[0]
    d = rows // n_heads
    index = [hh * d + 2 * i + t for hh in range(n_heads) for t in range(2) for i in range(d // 2)]
    return w[index]


def _hf_weights(arch, vocab_size, tied, seed):
    """Random Hugging Face tensors (float32 numpy) of the tiny model."""
    rng = np.random.default_rng(seed)
    c, h, kv, d, f = (SHAPE[k] for k in ("hidden", "heads", "kv_heads", "head_dim", "ffn"))
    shapes = {"model.embed_tokens.weight": (vocab_size, c), "model.norm.weight": (c,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab_size, c)
    for i in range(SHAPE["layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (c,), p + "post_attention_layernorm.weight": (c,),
                       p + "self_attn.q_proj.weight": (h * d, c), p + "self_attn.k_proj.weight": (kv * d, c),
                       p + "self_attn.v_proj.weight": (kv * d, c), p + "self_attn.o_proj.weight": (c, h * d),
                       p + "mlp.gate_proj.weight": (f, c), p + "mlp.up_proj.weight": (f, c),
                       p + "mlp.down_proj.weight": (c, f)})
        if arch == "qwen3":
            shapes.update({p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)})
    return {k: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.2 * rng.standard_normal(s)).astype(np.float32)
            for k, s in shapes.items()}


def _gguf_name(hf_name):
    if hf_name.startswith("model.layers."):
        i, module = hf_name.removeprefix("model.layers.").split(".", 1)
        module = module.removesuffix(".weight")
        return f"blk.{i}.{next(g for g, h in LAYER_TENSORS.items() if h == module)}.weight"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf_name]


def _store(w, qtype):
    """(bytes or array to write, raw type or None, what a reader gets back) for one tensor."""
    if qtype == Q.F32:
        return w, None, w
    if qtype == Q.F16:
        return w.astype(np.float16), None, w.astype(np.float16).astype(np.float32)
    q = gguf.quants.quantize(w, qtype)
    return q, qtype, gguf.quants.dequantize(q, qtype)


def write_tiny_gguf(path, arch="llama", tied=True, pre="smollm", add_bos=False, model="gpt2", seed=0, types=None,
                    extra=None):
    """Write a tiny model as a GGUF at `path`; returns {HF name: float32 tensor} of what it holds.

    types: {GGUF name: ggml type} over TYPES; extra: {GGUF name: float32 array} written as F32 after the rest.
    """
    types = {**TYPES, **(types or {})}
    tokens, merges, token_types = train_vocab()
    c, h, kv, d = (SHAPE[k] for k in ("hidden", "heads", "kv_heads", "head_dim"))
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(SHAPE["layers"])
    w.add_context_length(256)
    w.add_embedding_length(c)
    w.add_feed_forward_length(SHAPE["ffn"])
    w.add_head_count(h)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d)
    if arch == "qwen3":
        w.add_key_length(d)
        w.add_value_length(d)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(add_bos)
    w.add_chat_template(CHAT_TEMPLATE)

    expected = {}
    for name, weight in _hf_weights(arch, len(tokens), tied, seed).items():
        gguf_name = _gguf_name(name)
        if arch == "llama" and ".attn_q." in gguf_name:
            weight = permute(weight, h)
        elif arch == "llama" and ".attn_k." in gguf_name:
            weight = permute(weight, kv)
        default = Q.F32 if weight.ndim == 1 else Q.Q4_1
        data, raw_type, read_back = _store(weight, types.get(gguf_name, default))
        w.add_tensor(gguf_name, data, raw_dtype=raw_type)
        if arch == "llama" and ".attn_q." in gguf_name:
            read_back = permute_back(read_back, h)
        elif arch == "llama" and ".attn_k." in gguf_name:
            read_back = permute_back(read_back, kv)
        expected[name] = torch.from_numpy(np.ascontiguousarray(read_back, dtype=np.float32))
    for name, array in (extra or {}).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected
