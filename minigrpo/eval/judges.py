"""Pairwise judges for the tournament: which of two explanations of the same question is better?

The judge protocol is one batched method

    judge.compare(items, firsts, seconds) -> list[float]       1.0 first better, 0.5 tie, 0.0 second better

with items[i] the MCQItem both texts explain, firsts[i] the text shown first ("Explanation A") and seconds[i] the
one shown second. A judge also has a `name` and a `circular` flag (True when it measures the same thing as a
training reward, so that its verdicts say nothing independent about that reward).

  LMPairJudge      a local causal LM reads both explanations and decides by log p("A") vs log p("B").
  ReferenceJudge   no model: does the explanation state the gold option, and no wrong one? (synthetic data)
  EncoderCosineJudge  cosine to the reference under an encoder. CIRCULAR when that encoder is the reward's.

These judge pairs for evaluation; `minigrpo.rewards.judge` is a different thing, an LLM that grades one
completion from 1 to 10 as a training reward.
"""

import re

import torch

from minigrpo.data.formats import CompletionFormat

DEFAULT_PAIR_PROMPT = (
    "Two students explained the answer to a multiple-choice question. Decide which explanation is better: "
    "correct, consistent with the teacher's reference explanation, and clear.\n\n"
    "Question:\n{question}\n\n"
    "Correct answer: {answer}\n\n"
    "Reference explanation:\n{reference}\n\n"
    "Explanation A:\n{first}\n\n"
    "Explanation B:\n{second}\n\n"
    "Which explanation is better? Reply with the single letter A or B."
)
PLAIN_SUFFIX = "\nAnswer:"  # ends the prompt when no chat template is used; the letter follows after a space


def verdict(score_first, score_second, margin=0.0):
    """1.0 if score_first > score_second + margin, 0.0 if score_second > score_first + margin, else 0.5."""
    if score_first - score_second > margin:
        return 1.0
    if score_second - score_first > margin:
        return 0.0
    return 0.5


# ---- reference-grounded judge (no model) -------------------------------------------------------------------------


def phrase_pattern(phrase):
    """Regex of `phrase` as whole words, with an optional plural "s" / "es" ("mammal" matches "mammals")."""
    return re.compile(rf"(?<!\w){re.escape(phrase.strip())}(?:e?s)?(?!\w)", flags=re.IGNORECASE)


def states(text, phrase):
    """True when `phrase` occurs in `text` as whole words (`phrase_pattern`), ignoring case: "12" does not state
    "2", "seconds" states "second"."""
    return phrase_pattern(phrase).search(text or "") is not None


def fact_score(explanation, item, key_terms=()):
    """How well an explanation states the item's fact, from the item alone:

        s = g + k - c
        g = 1 if the gold option's text is stated, else 0
        c = number of wrong options stated that the question does not name
        k = fraction of `key_terms` stated (0 when none are given)

    "Stated" is `states`: whole words, case-insensitive, plural "s" / "es" allowed. A wrong option the question
    itself names is a premise, not a claim ("What is 5 - 3?" names 3; "Cal is lighter than Bob..." names Bob), so
    it is not counted in c. The gold text can be named by the question too (logic items): then restating the
    question earns g = 1, a limit of judging from the options alone.
    An explanation that names the gold option and a wrong one ("Warsaw, not Tokyo") gets g - c = 0.
    """
    g = float(states(explanation, item.answer_text))
    c = sum(1.0 for letter, text in item.options.items()
            if letter != item.answer and states(explanation, text) and not states(item.question, text))
    k = sum(states(explanation, t) for t in key_terms) / len(key_terms) if key_terms else 0.0
    return g + k - c


class ReferenceJudge:
    """Prefers the explanation with the higher `fact_score` (ties when equal); uses no model and no encoder.

    Args:
        key_terms: optional {item id: [terms]}: words a full explanation of that item should contain (for the
            synthetic data, e.g. the fact's entity and value); items missing from it have none.
        name: the judge's name in reports.

    It reads the gold and wrong options of each MCQItem, so it can only check the answer a text commits to, not
    the reasoning. It never uses the reward's encoder: judging with it would make the evaluation circular.
    """

    circular = False

    def __init__(self, key_terms=None, name="reference"):
        self.key_terms = dict(key_terms or {})
        self.name = name

    def score(self, explanation, item):
        return fact_score(explanation, item, tuple(self.key_terms.get(item.id, ())))

    def compare(self, items, firsts, seconds):
        _check_lengths(self.name, items, firsts, seconds)
        return [verdict(self.score(a, it), self.score(b, it)) for it, a, b in zip(items, firsts, seconds)]

    def reward(self, fmt=CompletionFormat()):
        """The score as a batched reward fn(completions, items) -> (N,) float32, reading fmt's explanation."""
        def fn(completions, items):
            return torch.tensor([self.score(fmt.parse(c).explanation or "", it) for c, it in zip(completions, items)],
                                dtype=torch.float32)
        return fn


# ---- encoder cosine (circular when the encoder is the reward's) -----------------------------------------------


class EncoderCosineJudge:
    """CIRCULAR judge: prefers the explanation whose embedding is closer (cosine) to the item's first reference.

        s(e) = cos(embed(e), embed(reference))          -1 for an empty explanation (never embedded)
        verdict = 1 if s(first) - s(second) > margin, 0 if s(second) - s(first) > margin, else 0.5

    With the semantic reward's own encoder this judge measures what GRPO maximised: a high rating from it is
    expected, not evidence. Its name says so, and `circular = True` marks it in every tournament report.
    """

    circular = True

    def __init__(self, encoder, margin=0.0, name="encoder_cosine (circular)"):
        self.encoder = encoder
        self.margin = margin
        self.name = name

    @torch.no_grad()
    def scores(self, texts, items):
        out = torch.full((len(texts),), -1.0)  # (N,)
        rows = [i for i, t in enumerate(texts) if t and t.strip()]
        if rows:
            # a tournament shows every text and every reference many times: embed each distinct one once
            distinct = list(dict.fromkeys([texts[i] for i in rows] + [items[i].explanation for i in rows]))
            index = {t: k for k, t in enumerate(distinct)}
            emb = self.encoder.embed(distinct).float()                                  # (n_distinct, C)
            e = emb[[index[texts[i]] for i in rows]]                                    # (n, C)
            ref = emb[[index[items[i].explanation] for i in rows]]                      # (n, C)
            out[rows] = (e * ref).sum(dim=-1).cpu()
        return out.tolist()

    def compare(self, items, firsts, seconds):
        _check_lengths(self.name, items, firsts, seconds)
        n = len(items)
        s = self.scores(list(firsts) + list(seconds), list(items) * 2)  # one encoder call for both sides
        return [verdict(a, b, self.margin) for a, b in zip(s[:n], s[n:])]


# ---- a causal LM as pairwise judge -----------------------------------------------------------------------------


def pair_question(item):
    """The question as the pairwise judge reads it: stem, then one lettered option per line."""
    return "\n".join([item.question] + [f"{letter}) {text}" for letter, text in item.options.items()])


class LMPairJudge:
    """A causal LM (minigrpo CausalLM) judges a pair by its next-token log-probabilities after the prompt:

        prompt = template(question with options, correct answer, reference, first, second)
        lp_A, lp_B = log_softmax(logits at the prompt's last position)[id("A"), id("B")]
        verdict = 1 if lp_A - lp_B > margin, 0 if lp_B - lp_A > margin, else 0.5   (margin 0: ties only if equal)

    One forward per judgement, no generation and no parsing, so it is deterministic. Prompts are tokenised once,
    sorted by length and run in left-padded batches of `batch_size` with an attention mask; only the last
    position goes through the output head (a (B, V) row, not (B, T, V) logits).

    Args:
        model, tokenizer: from minigrpo.models.load_causal_lm / load_tokenizer.
        template: str.format template with {question}, {answer}, {reference}, {first}, {second}.
        use_chat_template: wrap the prompt as a user turn with the tokenizer's chat template when it has one;
            the letter is then the assistant's first token, written without a leading space. Without a chat
            template the prompt ends with "\\nAnswer:" and the letters are read as " A" and " B".
        answer_prefix: text appended after the rendered chat prompt. None: "</think>\\n\\n" when the generation
            prompt ends inside an opened <think> block (DeepSeek-R1 templates), so the judge answers without
            reasoning; else "".
        margin: log-prob difference within which the verdict is a tie.
        batch_size: judgements per forward.
        name: the judge's name in reports.
    """

    circular = False

    def __init__(self, model, tokenizer, *, template=DEFAULT_PAIR_PROMPT, use_chat_template=True, answer_prefix=None,
                 margin=0.0, batch_size=16, name="lm"):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.chat = use_chat_template and getattr(tokenizer, "has_chat_template", False)
        self.answer_prefix = answer_prefix
        self.margin = margin
        self.batch_size = batch_size
        self.name = name
        self.letter_ids = tuple(self._letter_id(letter) for letter in ("A", "B"))

    def _letter_id(self, letter):
        text = letter if self.chat else " " + letter
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"LMPairJudge: the judge decides on one next token, but {text!r} encodes to {len(ids)} "
                             f"tokens {ids} with this tokenizer")
        return ids[0]

    def prompt(self, item, first, second):
        """The full prompt text for one judgement (chat template applied when used)."""
        text = self.template.format(question=pair_question(item), answer=f"{item.answer}) {item.answer_text}",
                                    reference=item.explanation, first=first, second=second)
        if not self.chat:
            return text + PLAIN_SUFFIX
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        prefix = self.answer_prefix
        if prefix is None:
            prefix = "</think>\n\n" if rendered.rstrip().endswith("<think>") else ""
        return rendered + prefix

    @torch.no_grad()
    def logprobs(self, items, firsts, seconds):
        """(N, 2) float32: log p("A") and log p("B") right after each prompt."""
        _check_lengths(self.name, items, firsts, seconds)
        # the chat template writes BOS itself; a plain prompt gets the tokenizer's special tokens
        rows = [self.tokenizer.encode(self.prompt(it, a, b), add_special_tokens=not self.chat)
                for it, a, b in zip(items, firsts, seconds)]
        device = self.model.lm_head.weight.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = torch.empty(len(rows), 2)  # (N, 2)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: little padding
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            T = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)   # (B, T), left-padded
            mask = torch.zeros((len(batch), T), dtype=torch.long)      # (B, T)
            for b, i in enumerate(batch):
                ids[b, T - len(rows[i]):] = torch.tensor(rows[i])
                mask[b, T - len(rows[i]):] = 1
            hidden = self.model.hidden_states(ids.to(device), mask.to(device))[:, -1]  # (B, C), last real token
            logp = torch.log_softmax(self.model.lm_head(hidden).float(), dim=-1)        # (B, V)
            out[batch] = logp[:, list(self.letter_ids)].cpu()
        return out

    def compare(self, items, firsts, seconds):
        if not len(items):
            return []
        lp = self.logprobs(items, firsts, seconds)  # (N, 2)
        return [verdict(a, b, self.margin) for a, b in lp.tolist()]


def _check_lengths(name, items, firsts, seconds):
    if not len(items) == len(firsts) == len(seconds):
        raise ValueError(f"judge {name!r}: expected as many items, first texts and second texts, found "
                         f"{len(items)}, {len(firsts)} and {len(seconds)}")
