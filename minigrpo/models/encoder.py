"""A frozen text encoder over the transformer body: the Qwen3-Embedding recipe.

    text  -> (optional) "Instruct: {instruction}\\nQuery:{text}"        (no space after "Query:"; documents get none)
          -> tokens, left-padded; the tokenizer's own post-processor appends <|endoftext|>
          -> hidden states h (B, T, C) after the final norm
          -> pooled e: "last": h at the last real token (the appended <|endoftext|>)
                       "mean": sum_t m_t h_t / sum_t m_t over real tokens (m = attention mask)
          -> e[:, :dim] when dim is given (Matryoshka truncation, BEFORE normalizing)
          -> e / ||e||_2                                                  (float32)

Cosine similarity of two texts is then the dot product of their embeddings. Never derive the attention mask from
`ids != pad_id`: Qwen3's pad token is the very <|endoftext|> that ends every sequence.
"""

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("last", "mean")


def format_query(text, instruction):
    """The Qwen3-Embedding query prompt: newline after the task, no space after 'Query:'."""
    return f"Instruct: {instruction}\nQuery:{text}"


def pool(hidden, attention_mask, pooling):
    """hidden (B, T, C), attention_mask (B, T) -> (B, C) by last real token or masked mean."""
    mask = attention_mask.to(hidden.device)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=hidden.device)  # (T,)
        last = (positions * mask).argmax(dim=1)  # (B,) index of each row's last real token, any padding side
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class Encoder(nn.Module):
    """Frozen body + tokenizer + pooling. Build it with load_encoder(path)."""

    def __init__(self, model, tokenizer, pooling="last", max_length=8192):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: expected one of {POOLINGS}")
        self.model = model  # a Transformer (no lm_head)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length  # tokens per text, the appended <|endoftext|> included
        self.requires_grad_(False)
        self.eval()

    @property
    def config(self):
        return self.model.config

    @torch.no_grad()
    def hidden_states(self, input_ids, attention_mask):
        """(B, T), (B, T) -> (B, T, C) after the final norm."""
        return self.model(input_ids, attention_mask)

    @torch.no_grad()
    def embed(self, texts, instruction=None, dim=None, batch_size=32):
        """list of N texts (or one str) -> (N, dim or C) float32, L2-normalized, in the input order."""
        if isinstance(texts, str):
            texts = [texts]
        if dim is not None and not 1 <= dim <= self.config.hidden_size:
            raise ValueError(f"dim must be between 1 and hidden_size {self.config.hidden_size}, found {dim}")
        if instruction is not None:
            texts = [format_query(t, instruction) for t in texts]
        device = self.model.embed_tokens.weight.device
        # batch texts of similar length together (less padding); results go back to the input order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), dim or self.config.hidden_size, dtype=torch.float32, device=device)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = self.tokenizer.batch_encode([texts[i] for i in rows], padding_side="left",
                                                    max_length=self.max_length)
            ids, mask = ids.to(device), mask.to(device)  # (b, T) each
            e = pool(self.hidden_states(ids, mask), mask, self.pooling).float()  # (b, C)
            if dim is not None:
                e = e[:, :dim]
            out[rows] = F.normalize(e, p=2, dim=-1)
        return out
