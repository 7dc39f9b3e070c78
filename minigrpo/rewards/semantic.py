"""The semantic reward: how close the generated explanation is, in a frozen encoder's embedding space, to the
reference explanation written by a tutor.

For completion i answering question q(i), with explanation embedding e_i and reference embeddings r_{q,1..M}
(all L2-normalised, so a dot product is a cosine):

    cos_i  = reduce_j  e_i . r_{q(i),j}                      reduce = max (default) or mean over the M references
    R_i    = clip(cos_i - b_i, -1, 1)                        rescale=False
    R_i    = clip((cos_i - b_i) / (1 - b_i), -1, 1)          rescale=True  (1 - b_i floored at 1e-6)

Why a baseline. Sentence encoders place all texts of one language and domain in a narrow cone: two unrelated
explanations often have cosine 0.6-0.8. The raw cosine then rewards "sounds like an explanation" almost as much as
"explains this question". The baseline b_i subtracts that shared offset:

    none        b_i = 0
    constant    b_i = b, a value given by the user (e.g. the mean cosine of unrelated pairs, measured offline)
    off_target  b_i = b_q(i), with, for each distinct question q of the batch,
                    b_q = mean over the OTHER distinct questions q' != q of
                          mean_k reduce_j r_{q',k} . r_{q,j}
                i.e. the score that an explanation of another question (its tutor's reference r_{q',k}, written in
                the same style) gets as an explanation of q. It is built from references only, so it is the same
                for every completion of q: a better match (a higher cos_i) never scores lower. Each other question
                counts once however many completions of it the batch holds (questions are told apart by
                item.id). When the batch holds a single question there is no other question: b_i is then the
                running mean of the batch-mean off-target baselines of earlier calls, or 0 before any such call
                (so a run that always has one question per batch gets the `none` baseline).
                In data-parallel training "the batch" is the step's global batch (combine.global_batch): the
                other questions are those of every rank, and the running mean adds the mean over every rank's
                rows, so the reward does not depend on how many processes share the batch.

Why the baseline uses no completion. An earlier definition measured the completion's OWN cosine to the other
questions' references (b_i = mean_q' reduce_j e_i . r_{q',j}). That is a second reward term, not a baseline: it
pays for being unlike other references, and can rank a worse match higher. With 2-D unit vectors, q's reference
at 0 degrees and the other question's at 30 degrees, a verbatim copy of the reference (cos 1, b_i = cos 30 = 0.87)
scored 0.13, while an explanation at -64.5 degrees (cos 0.43, b_i = cos 94.5 = -0.08) scored 0.51. Here both get
b = 0.87: 0.13 and -0.44.

What a baseline does to GRPO. Every baseline above is the same for all completions of one question, and GRPO's
advantages are centred within each question's group, so the shift itself cancels. The baseline still matters
through the clip to [-1, 1], through rescale (the factor 1 / (1 - b) sets the semantic reward's weight against the
other rewards in the sum), and in the logged reward level.

rescale divides by the room left above the baseline, so a perfect match still scores 1 whatever b_i is.

A completion with no explanation (section missing, unclosed or empty) scores -1, the minimum of the clipped range,
and is never sent to the encoder. An item without any reference explanation is an error naming the item.

Cost per call: one encoder call for all explanations, plus one for the references not seen before. Reference
embeddings are cached by (item id, reference text) for the life of the object.

The encoder is any object with `embed(texts) -> (N, C)` L2-normalised float tensor (minigrpo.models.Encoder, or a
stub in tests). With `instruction` set, it is passed as embed(texts, instruction=...) to BOTH the explanations and
the references: the two sides are the same kind of text, so they are embedded the same way.
"""

import torch

from minigrpo.data.formats import CompletionFormat

BASELINES = ("none", "constant", "off_target")
REDUCTIONS = ("max", "mean")
EMPTY_EXPLANATION_REWARD = -1.0


class SemanticReward:
    """Batched semantic reward: `reward(completions, items) -> (N,) float32`.

    Args:
        encoder: object with `.embed(texts) -> (N, C)` L2-normalised embeddings; used under torch.no_grad.
        baseline: "none" | "constant" | "off_target" (see the module docstring).
        constant: b for baseline="constant".
        rescale: divide (cos - b) by (1 - b).
        reduce: "max" or "mean" over an item's reference explanations.
        fmt: the completion format whose explanation section is scored.
        instruction: passed to encoder.embed(..., instruction=) for explanations and references; None to omit.
        name: key of this reward in logs and in the reward breakdown.

    Running state: the off-target running mean (see _baseline) is updated only in training mode (`training`,
    switched by train() / eval() as on an nn.Module), so evaluating a policy never changes how training is
    rewarded; state_dict() / load_state_dict() let a trainer checkpoint it, so a resumed run continues from it.
    """

    def __init__(self, encoder, baseline="off_target", constant=0.0, rescale=False, reduce="max",
                 fmt=CompletionFormat(), instruction=None, name="semantic"):
        if baseline not in BASELINES:
            raise ValueError(f"SemanticReward.baseline: expected one of {BASELINES}, found {baseline!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"SemanticReward.reduce: expected one of {REDUCTIONS}, found {reduce!r}")
        self.encoder = encoder
        self.baseline = baseline
        self.constant = float(constant)
        self.rescale = rescale
        self.reduce = reduce
        self.fmt = fmt
        self.instruction = instruction
        self.name = name
        self._cache = {}            # (item id, reference text) -> (C,) embedding
        self._off_target_sum = 0.0  # running mean of batch-mean off-target baselines, for single-question batches
        self._off_target_calls = 0
        self.last_stats = {}        # python floats from the last call, for logging
        self.training = True        # False: read the running state, never update it (evaluation)
        self.global_batch = None    # the step's items on every rank, set by combine.global_batch
        self._pending = None        # (sum, count) of this rank's off-target baselines, until merge_batch_state

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """The running state that changes the reward of later calls (plain Python numbers)."""
        return {"off_target_sum": self._off_target_sum, "off_target_calls": self._off_target_calls}

    def load_state_dict(self, state):
        self._off_target_sum = float(state["off_target_sum"])
        self._off_target_calls = int(state["off_target_calls"])

    def merge_batch_state(self, all_sum):
        """End of a `global_batch` step, on every rank (all_sum is a collective): add the mean off-target baseline
        over every rank's rows to the running mean, as one call on the whole batch would have."""
        total, count = all_sum(torch.tensor(self._pending or (0.0, 0.0), dtype=torch.float64)).tolist()
        self._pending = None
        if count > 0:
            self._off_target_sum += total / count
            self._off_target_calls += 1

    @property
    def cache_size(self):
        return len(self._cache)

    def clear_cache(self):
        self._cache.clear()

    def _embed(self, texts):
        with torch.no_grad():
            if self.instruction is None:
                emb = self.encoder.embed(texts)
            else:
                emb = self.encoder.embed(texts, instruction=self.instruction)
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(texts):
            found = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"SemanticReward: encoder.embed of {len(texts)} texts should return a "
                             f"({len(texts)}, C) tensor, found {found}")
        return emb.float()  # (n, C)

    def _references(self, items):
        """Embeddings of each distinct item's references: {item id: (M, C)}, embedding only uncached texts."""
        by_id = {}
        for item in items:
            if item.id not in by_id:
                refs = tuple(item.explanations or ())
                if not refs:
                    raise ValueError(f"SemanticReward: item {item.id!r} has no reference explanation; the semantic "
                                     f"reward needs at least one in item.explanations")
                by_id[item.id] = refs
        missing = list(dict.fromkeys((qid, text) for qid, refs in by_id.items() for text in refs
                                     if (qid, text) not in self._cache))
        if missing:
            emb = self._embed([text for _, text in missing])  # (n_missing, C)
            for key, row in zip(missing, emb):
                self._cache[key] = row
        return {qid: torch.stack([self._cache[(qid, text)] for text in refs]) for qid, refs in by_id.items()}

    def _reduce(self, sims):
        """(n, M) cosines -> (n,) by max or mean over the M references."""
        return sims.max(dim=-1).values if self.reduce == "max" else sims.mean(dim=-1)

    def __call__(self, completions, items):
        if len(completions) != len(items):
            raise ValueError(f"{self.name} reward: expected one item per completion, found {len(completions)} "
                             f"completions and {len(items)} items")
        n = len(completions)
        rewards = torch.full((n,), EMPTY_EXPLANATION_REWARD, dtype=torch.float32)  # (N,)
        explanations = [self.fmt.parse(text).explanation for text in completions]
        rows = [i for i, e in enumerate(explanations) if e]  # completions with a non-empty explanation
        if not rows:
            self.last_stats = {"cos_mean": float("nan"), "baseline_mean": float("nan"), "frac_scored": 0.0}
            return rewards

        # Every distinct question of the batch, also those whose completions all lack an explanation, so the
        # off-target baseline does not depend on how the other completions fared.
        refs = self._references(items if self.global_batch is None else self.global_batch)  # {id: (M, C)}, Q ids
        outside = [items[i].id for i in rows if items[i].id not in refs]
        if outside:
            raise ValueError(f"SemanticReward: item {outside[0]!r} is not in global_batch, the step's items")
        expl = self._embed([explanations[i] for i in rows])    # (n, C)
        column = {qid: k for k, qid in enumerate(refs)}
        # sim[a, k]: reduced cosine of explanation a to the references of distinct question k.
        sim = torch.stack([self._reduce(expl @ r.to(expl.device).T) for r in refs.values()], dim=1)  # (n, Q)
        own = torch.tensor([column[items[i].id] for i in rows], device=sim.device)                   # (n,)
        cos = sim.gather(1, own[:, None]).squeeze(1)                                                 # (n,)
        base = self._baseline(sim, own, refs)                                                        # (n,)

        adjusted = cos - base
        if self.rescale:
            adjusted = adjusted / (1.0 - base).clamp_min(1e-6)
        rewards[rows] = adjusted.clamp(-1.0, 1.0).float().cpu()
        self.last_stats = {"cos_mean": cos.mean().item(), "baseline_mean": base.mean().item(),
                           "frac_scored": len(rows) / n}
        return rewards

    def _baseline(self, sim, own, refs):
        """b (n,) for the rows of the (n, Q) reduced cosines, whose own question is column own (n,)."""
        n, q = sim.shape
        if self.baseline == "none":
            return sim.new_zeros(n)
        if self.baseline == "constant":
            return sim.new_full((n,), self.constant)
        if q == 1:
            # No other question in the batch: reuse what earlier batches measured, or 0 before any.
            value = self._off_target_sum / self._off_target_calls if self._off_target_calls else 0.0
            return sim.new_full((n,), value)
        base = off_target_baselines(list(refs.values()), self._reduce).to(sim.device)[own]  # (n,)
        if self.training and self.global_batch is None:
            self._off_target_sum += base.mean().item()
            self._off_target_calls += 1
        elif self.training:  # merged over the ranks when the step's scoring ends (merge_batch_state)
            self._pending = (base.double().sum().item(), float(n))
        return base


def off_target_baselines(refs, reduce):
    """b_q (Q,) of the off_target baseline (module docstring) from the references of Q >= 2 distinct questions.

    refs: list of Q tensors (M_q, C), L2-normalised; reduce: (m, M) cosines -> (m,), max or mean over the M.
    """
    # score[a, b]: question b's references, taken as explanations of question a, reduced over a's references and
    # averaged over b's.
    score = torch.stack([torch.stack([reduce(r_b @ r_a.T).mean() for r_b in refs]) for r_a in refs])  # (Q, Q)
    others = ~torch.eye(len(refs), dtype=torch.bool, device=score.device)                                # (Q, Q)
    return (score * others).sum(dim=1) / (len(refs) - 1)                                                 # (Q,)
