"""A frozen text encoder: a transformer body, its tokenizer and a pooling. Two recipes, chosen by the model:

Qwen3-Embedding (a causal Qwen3 body):
    text  -> (optional) "Instruct: {instruction}\\nQuery:{text}"        (no space after "Query:"; documents get none)
          -> tokens, left-padded; the tokenizer's own post-processor appends <|endoftext|>
          -> hidden states h (B, T, C) after the final norm
BERT sentence encoders (all-MiniLM-L6-v2 and the like, see bert.py):
    text  -> tokens, RIGHT-padded: positions are learned and absolute, numbered 0..T-1 in every row, so each row
             must start at column 0; the WordPiece post-processor adds [CLS] ... [SEP]; token types all 0
          -> hidden states h (B, T, C) of the last layer
then, for both:
          -> pooled e: "last": h at the last real token (Qwen3's appended <|endoftext|>, BERT's [SEP])
                       "mean": sum_t m_t h_t / sum_t m_t over real tokens (m = attention mask)
                       "cls":  h at the first real token (BERT's [CLS]; BERT only)
          -> e[:, :dim] when dim is given (Matryoshka truncation, BEFORE normalizing)
          -> e / ||e||_2                                                  (float32)

Texts longer than max_length tokens are cut from the right, keeping the tokens the post-processor adds (a BERT row
of max_length still ends in [SEP]; sentence-transformers truncates the same way). max_length defaults to the
model's max_position_embeddings; load_encoder lowers it to a sentence-transformers folder's max_seq_length.

Cosine similarity of two texts is then the dot product of their embeddings. Never derive the attention mask from
`ids != pad_id`: Qwen3's pad token is the very <|endoftext|> that ends every sequence.
"""

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("last", "mean", "cls")
# A causal model's first token has seen only itself, so its state says nothing about the rest of the text.
CAUSAL_POOLINGS = ("last", "mean")


def format_query(text, instruction):
    """The Qwen3-Embedding query prompt: newline after the task, no space after 'Query:'."""
    return f"Instruct: {instruction}\nQuery:{text}"


def pool(hidden, attention_mask, pooling):
    """hidden (B, T, C), attention_mask (B, T) -> (B, C) by last real token, first real token or masked mean."""
    mask = attention_mask.to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=hidden.device)  # (T,)
        last = (positions * mask).argmax(dim=1)  # (B,) index of each row's last real token, any padding side
        return hidden[rows, last]
    if pooling == "cls":
        return hidden[rows, mask.argmax(dim=1)]  # argmax gives the first 1: each row's first real token
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class Encoder(nn.Module):
    """Frozen body + tokenizer + pooling. Build it with load_encoder(path)."""

    def __init__(self, model, tokenizer, pooling="last", max_length=None):
        super().__init__()
        self.is_bert = model.config.model_type == "bert"
        allowed = POOLINGS if self.is_bert else CAUSAL_POOLINGS
        if pooling not in allowed:
            raise ValueError(f"unknown pooling {pooling!r} for a {model.config.model_type} encoder: expected one of "
                             f"{allowed}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, found {max_length}")
        self.model = model  # a Transformer (no lm_head) or a BertModel
        self.tokenizer = tokenizer
        self.pooling = pooling
        # tokens per text, the tokens the post-processor adds included; never more than the model has positions for
        self.max_length = max_length or model.config.max_position_embeddings
        # BERT's absolute positions need every row to start at column 0; Qwen3's official recipe pads on the left
        self.padding_side = "right" if self.is_bert else "left"
        self.requires_grad_(False)
        self.eval()

    @property
    def config(self):
        return self.model.config

    @torch.no_grad()
    def hidden_states(self, input_ids, attention_mask):
        """(B, T), (B, T) -> (B, T, C): after the final norm (Qwen3), the last layer's output (BERT)."""
        return self.model(input_ids, attention_mask)

    @torch.no_grad()
    def embed(self, texts, instruction=None, dim=None, batch_size=32):
        """list of N texts (or one str) -> (N, dim or C) float32, L2-normalized, in the input order."""
        if isinstance(texts, str):
            texts = [texts]
        if dim is not None and not 1 <= dim <= self.config.hidden_size:
            raise ValueError(f"dim must be between 1 and hidden_size {self.config.hidden_size}, found {dim}")
        if instruction is not None:
            if self.is_bert:
                raise ValueError("instruction prompts are the Qwen3-Embedding recipe; a BERT sentence encoder embeds "
                                 "plain text: pass instruction=None")
            texts = [format_query(t, instruction) for t in texts]
        device = next(self.model.parameters()).device
        # batch texts of similar length together (less padding); results go back to the input order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), dim or self.config.hidden_size, dtype=torch.float32, device=device)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = self.tokenizer.batch_encode([texts[i] for i in rows], padding_side=self.padding_side,
                                                    max_length=self.max_length)
            ids, mask = ids.to(device), mask.to(device)  # (b, T) each
            e = pool(self.hidden_states(ids, mask), mask, self.pooling).float()  # (b, C)
            if dim is not None:
                e = e[:, :dim]
            out[rows] = F.normalize(e, p=2, dim=-1)
        return out
