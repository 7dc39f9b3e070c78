"""The paper's pipeline in miniature, on a laptop CPU, with nothing downloaded:

    synthetic MCQ dataset + textbook corpus
      -> byte-level BPE tokenizer trained on them
      -> tiny Qwen3 encoder, trained contrastively on paraphrases, then frozen   (or --encoder PATH)
      -> tiny Llama policy: CPT on the corpus -> SFT on the train items -> GRPO with LoRA, once per reward
      -> greedy evaluation of every stage on the held-out items
      -> a pairwise tournament between the stages' held-out explanations, rated with Elo (the paper's Figure 1)

GRPO runs once per explanation reward of --rewards, each from the same SFT checkpoint with the same seed: the
paper's reward semantic + correctness + format + CoT (unweighted sum), the lexical variant with ROUGE-L instead of
the semantic reward, and both together. Every stage is evaluated with the same yardstick: "reward" is the paper's
sum; rouge_l is reported beside it (weight 0). The policy imitates DeepSeek-R1-Distill: its chat template opens a
<think> block in the prompt and it answers in R1_FORMAT.

The tournament (minigrpo/eval/rating.py) compares every pair of stages on every held-out item, in both orders,
from the cached completions. Its judges: the reference judge, which knows each item's gold option and its fact's
key terms and uses no model (pooled into "elo"), and the encoder's cosine to the reference, shown but labelled
CIRCULAR (it is the semantic reward itself, so it rates what GRPO-semantic maximised). The tiny policy is no judge.

Look at: the encoder margin (paraphrase closer than another question's explanation); the batch reward in
grpo-<reward>/metrics.jsonl (and rewards.png), which GRPO raises on its own items; the table of held-out accuracy,
format rate and reward per stage; and the Elo table, which says whose explanations state the item's fact (and no
wrong option) more often, with 95% intervals over items. Do not expect a held-out accuracy gain: after SFT the
tiny policy answers unseen questions at about chance, because it does not learn to turn a recalled answer into its
option letter (the README and examples/answer_skills_probe.py show why), and GRPO does not change that. The `cloze`
column is the knowledge probe of minigrpo/miniature/knowledge.py: how often the model prefers the true statement
of a held-out fact over the same sentence with a wrong option, i.e. whether the fact is in the weights at all,
answerable or not.

Everything lands in --out: data/, tokenizer/, encoder/, cpt/, sft/, grpo-<reward>/ for each reward (metrics.jsonl,
samples.jsonl), completions/<variant>.json (every held-out completion of cpt, sft, grpo_semantic, grpo_rouge,
grpo_semantic_rouge), results.json (per stage: "cpt", "sft", "grpo" = GRPO-semantic, "grpo_rouge",
"grpo_semantic_rouge"; "elo": {variant: {"rating", "ci"}}, pooled over the non-circular judges; "tournament": the
full report per judge), rewards.png and elo.png.

    python examples/miniature.py --out runs/miniature
"""

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from minigrpo.data import R1_FORMAT
from minigrpo.data.prompts import format_question, sft_target
from minigrpo.eval import (EncoderCosineJudge, ReferenceJudge, evaluate_policy, explanation_of,
                           load_variant_completions, rate_variants, save_variant_completions)
from minigrpo.eval.tournament import format_report
from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.trainer import GRPOTrainer
from minigrpo.miniature import (cloze_accuracy, init_weights_, make_synthetic_dataset, paraphrase_margin,
                                paraphrase_triplets, tiny_config, train_bpe_tokenizer, train_encoder, write_dataset)
from minigrpo.models import CausalLM, ModelConfig, Transformer, load_causal_lm, load_encoder
from minigrpo.models.saving import save_model
from minigrpo.rewards import paper_rewards
from minigrpo.rewards.combine import VARIANTS
from minigrpo.train import pack_blocks, run_cpt, run_sft, shuffled_sentence_copies

# A one-line system prompt keeps the tiny model's prompts short (~60 tokens); the format is learned in SFT.
SYSTEM_PROMPT = "You are a tutor. Think in <think></think>, then explain in <explanation></explanation>, then answer in <answer></answer>."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/miniature", help="run directory (created)")
    p.add_argument("--seed", type=int, default=0, help="seeds the dataset, every init and every sampler")
    p.add_argument("--rewards", "--reward", dest="rewards", default="semantic,rouge,semantic+rouge",
                   type=reward_list, help="comma-separated explanation rewards, one GRPO run each from the SFT "
                                          f"model, among {', '.join(VARIANTS)} (--reward X: X alone)")
    p.add_argument("--encoder", default=None, help="a Qwen3 / Qwen3-Embedding checkpoint folder to use as the "
                                                   "frozen encoder instead of training the tiny one")
    p.add_argument("--n-train", type=int, default=400, help="train MCQ items")
    p.add_argument("--n-eval", type=int, default=100, help="held-out MCQ items")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    p.add_argument("--hidden", type=int, default=128, help="policy width")
    p.add_argument("--layers", type=int, default=4, help="policy decoder blocks")
    p.add_argument("--encoder-steps", type=int, default=300, help="contrastive encoder steps")
    p.add_argument("--cpt-steps", type=int, default=800, help="continued pre-training steps")
    p.add_argument("--cpt-copies", type=int, default=40,
                   help="copies of the corpus, each with its sentences in a new order (0: the paragraphs as written)")
    p.add_argument("--cpt-optimizer", default="adamw", choices=["adamw", "muon"], help="CPT optimizer (ablation)")
    p.add_argument("--sft-steps", type=int, default=300, help="SFT steps")
    p.add_argument("--sft-replay", type=int, default=1, help="1: mix the CPT corpus into SFT batches (rehearsal)")
    p.add_argument("--sft-fraction", type=float, default=0.5,
                   help="share of the train items used for SFT; GRPO explores on the rest, which the policy has not "
                        "memorised, so what it learns there must transfer")
    p.add_argument("--grpo-steps", type=int, default=60, help="GRPO steps")
    p.add_argument("--prompts-per-step", type=int, default=8, help="GRPO prompts per step")
    p.add_argument("--num-generations", type=int, default=6, help="K completions per prompt (paper: 6)")
    p.add_argument("--grpo-lr", type=float, default=5e-4, help="LoRA learning rate")
    p.add_argument("--max-new-tokens", type=int, default=96, help="completion length cap (GRPO and eval)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def reward_list(text):
    """ "semantic,rouge" -> ("semantic", "rouge"): known variants, each once."""
    rewards = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in rewards if r not in VARIANTS]
    if not rewards or unknown or len(set(rewards)) != len(rewards):
        raise argparse.ArgumentTypeError(f"expected distinct rewards among {', '.join(VARIANTS)}, found {text!r}")
    return rewards


def variant_name(reward):
    """The GRPO variant trained with `reward`, as the Elo table and the completion files name it:
    "semantic+rouge" -> "grpo_semantic_rouge"."""
    return "grpo_" + reward.replace("+", "_")


def results_key(variant):
    """results.json keeps GRPO-semantic under "grpo", where it was before the other variants."""
    return "grpo" if variant == "grpo_semantic" else variant


def new_checkpoint(out_dir, arch, tokenizer_dir, seed, **overrides):
    """A randomly initialised checkpoint folder of `arch` whose vocabulary is the tokenizer's."""
    tok_config = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    vocab = len(tok_config["model"]["vocab"]) + sum(1 for t in tok_config["added_tokens"]
                                                     if t["content"] not in tok_config["model"]["vocab"])
    config = tiny_config(arch, vocab, **overrides)
    model_config = ModelConfig.from_hf_config(config, source=str(out_dir))
    model = Transformer(model_config) if arch == "qwen3-embedding" else CausalLM(model_config)
    init_weights_(model, torch.Generator().manual_seed(seed))
    return save_model(model, out_dir, config, tokenizer_dir)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run, progress, t_start = Path(args.out), not args.quiet, time.perf_counter()
    run.mkdir(parents=True, exist_ok=True)
    fmt = R1_FORMAT
    timings, last = {}, [t_start]

    def lap(stage):  # wall time of each stage, for results.json
        now = time.perf_counter()
        timings[stage], last[0] = round(now - last[0], 1), now

    # ---- data ----
    ds = make_synthetic_dataset(seed=args.seed, n_train=args.n_train, n_eval=args.n_eval)
    write_dataset(ds, run / "data")
    print(f"data: {len(ds.train)} train / {len(ds.eval)} held-out items, {len(ds.corpus)} corpus paragraphs")

    # ---- tokenizers: one BPE for the policy (R1 chat template), the same texts for the encoder ----
    texts = list(ds.corpus) + [SYSTEM_PROMPT, fmt.render("a", "b", "C")]
    texts += [" ".join([it.question, *it.options.values(), *it.explanations, ds.reasoning[it.id]]) for it in ds.train]
    tok = train_bpe_tokenizer(texts, run / "tokenizer", args.vocab_size, style="llama")
    train_bpe_tokenizer(texts, run / "encoder-tokenizer", args.vocab_size, style="qwen3-embedding")
    print(f"tokenizer: {tok.vocab_size} tokens")
    lap("data+tokenizer")

    # ---- encoder ----
    triplets = paraphrase_triplets(ds, split="eval", seed=args.seed)
    if args.encoder:
        encoder = load_encoder(args.encoder, dtype=torch.float32)
    else:
        enc_dir = new_checkpoint(run / "encoder", "qwen3-embedding", run / "encoder-tokenizer", args.seed + 1,
                                 hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32)
        encoder = load_encoder(enc_dir, pooling="mean")
        before = paraphrase_margin(encoder, triplets)
        train_facts = {ds.fact_of[it.id] for it in ds.train}
        groups = [ds.facts[k].explanations for k in sorted(train_facts)]
        train_encoder(encoder.model, encoder.tokenizer, groups, steps=args.encoder_steps, pooling="mean",
                      seed=args.seed, progress=progress)
        save_model(encoder.model, enc_dir, enc_dir / "config.json", enc_dir)
        encoder = load_encoder(enc_dir, pooling="mean")
        print(f"encoder margin before training: {before[0]:+.3f} ({before[1]:.0%} of held-out items)")
    margin, frac = paraphrase_margin(encoder, triplets)
    print(f"encoder margin on held-out items: cos(ref, paraphrase) - cos(ref, other question) = {margin:+.3f}, "
          f"holds for {frac:.0%}")

    lap("encoder")

    def prompt_fn(item):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": format_question(item)}]
        return tok.apply_chat_template(messages, add_generation_prompt=True)

    # One yardstick for every stage: all the components, "reward" the paper's sum (ROUGE-L shown, weight 0).
    answer_eval = functools.partial(evaluate_policy, tokenizer=tok, items=ds.eval, prompt_fn=prompt_fn,
                                    reward_fns=paper_rewards(encoder, fmt, variant="semantic+rouge"),
                                    weights={"rouge_l": 0.0}, max_new_tokens=args.max_new_tokens)
    results = {"args": vars(args), "encoder": {"margin": margin, "fraction": frac}}
    variants = []  # the stages the tournament rates, in table order

    def evaluate(variant, policy):
        """Greedy answers (every completion cached for the tournament) and the cloze probe of stored facts."""
        result = answer_eval(policy)
        save_variant_completions(run / "completions", ds.eval, variant, result.completions)
        results[results_key(variant)] = {**result.as_dict(), "cloze": cloze_accuracy(policy, tok, ds.eval)[0]}
        variants.append(variant)

    # ---- policy: CPT -> SFT ----
    init_dir = new_checkpoint(run / "init", "llama", run / "tokenizer", args.seed + 2, hidden_size=args.hidden,
                              intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
                              num_attention_heads=4, num_key_value_heads=2)
    policy = load_causal_lm(init_dir)
    cpt_texts = shuffled_sentence_copies(ds.corpus, args.cpt_copies, args.seed) if args.cpt_copies else ds.corpus
    run_cpt(policy, tok, cpt_texts, steps=args.cpt_steps, optimizer=args.cpt_optimizer, seed=args.seed,
            progress=progress)
    save_model(policy, run / "cpt", init_dir / "config.json", run / "tokenizer")
    lap("cpt")
    evaluate("cpt", policy)
    lap("eval-cpt")

    n_sft = max(1, round(args.sft_fraction * len(ds.train)))
    sft_items, grpo_items = ds.train[:n_sft], ds.train[n_sft:] or ds.train
    prompts = [prompt_fn(it) for it in sft_items]
    targets = [sft_target(it, fmt, ds.reasoning[it.id]) for it in sft_items]
    # rehearsal: a single sentence-shuffled copy of the corpus, i.e. as much text as the corpus itself
    replay = pack_blocks(tok, shuffled_sentence_copies(ds.corpus, 1, args.seed + 1), 128) if args.sft_replay else None
    run_sft(policy, tok, prompts, targets, steps=args.sft_steps, seed=args.seed, replay=replay, progress=progress)
    save_model(policy, run / "sft", init_dir / "config.json", run / "tokenizer")
    lap("sft")
    evaluate("sft", policy)
    lap("eval-sft")

    # ---- GRPO with LoRA, once per reward, each from the same SFT model with the same seed ----
    for reward in args.rewards:
        policy = load_causal_lm(run / "sft")
        config = GRPOConfig(run_dir=str(run / f"grpo-{reward}"), max_steps=args.grpo_steps,
                            prompts_per_step=args.prompts_per_step, num_generations=args.num_generations,
                            max_completion_length=args.max_new_tokens, max_prompt_length=512,
                            learning_rate=args.grpo_lr, warmup_steps=5, seed=args.seed, save_interval=0,
                            sample_interval=10, progress=progress)
        GRPOTrainer(policy, tok, paper_rewards(encoder, fmt, variant=reward), grpo_items, prompt_fn, config).train()
        lap(f"grpo-{reward}")
        evaluate(variant_name(reward), policy)
        lap(f"eval-grpo-{reward}")

    # ---- pairwise tournament on the cached held-out completions (no generation) ----
    judges = [ReferenceJudge(ds.key_terms(ds.eval)), EncoderCosineJudge(encoder)]
    rating = rate_variants(ds.eval, load_variant_completions(run / "completions", ds.eval, variants), judges,
                           extract=explanation_of(fmt), seed=args.seed, plot=run / "elo.png")
    results.update(rating)
    lap("tournament")
    results["timings"], results["wall_seconds"] = timings, round(time.perf_counter() - t_start, 1)

    (run / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, variants)
    print("\n" + format_report(results["tournament"]))
    plot_rewards({r: run / f"grpo-{r}" / "metrics.jsonl" for r in args.rewards}, run / "rewards.png")
    print(f"wrote {run / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results


def print_table(results, variants):
    names = list(results["sft"]["rewards"])
    width = max(len(v) for v in variants) + 1
    header = (f"{'stage':<{width}} {'accuracy':>8} {'format':>7} {'reward':>7} " + " ".join(f"{n:>11}" for n in names)
              + f" {'cloze':>6}")
    print(f"\nheld-out evaluation (greedy); reward = semantic + correctness + format + cot\n{header}\n"
          f"{'-' * len(header)}")
    for variant in variants:
        r = results[results_key(variant)]
        print(f"{variant:<{width}} {r['accuracy']:>8.3f} {r['format_rate']:>7.3f} {r['reward']:>7.3f} "
              + " ".join(f"{r['rewards'][n]:>11.3f}" for n in names) + f" {r['cloze']:>6.3f}")


def plot_rewards(metrics_paths, out_png):
    """Reward components over GRPO steps, one panel per GRPO run ({reward: metrics.jsonl}); skipped with a note
    when matplotlib (the `plot` extra) is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot")
        return
    fig, axes = plt.subplots(1, len(metrics_paths), figsize=(5 * len(metrics_paths), 4), squeeze=False, sharey=True)
    for ax, (reward, path) in zip(axes[0], metrics_paths.items()):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        keys = [k for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean")]
        for key in keys + ["reward"]:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows],
                    label=key.removeprefix("rewards/").removesuffix("/mean"))
        ax.set_title(f"GRPO, reward {reward}", fontsize=10)
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("mean reward over the batch")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    print(f"plot: {out_png}")


if __name__ == "__main__":
    main()
