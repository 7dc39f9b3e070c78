"""GRPO on a toy task a random tiny model can learn in a minute or two on a laptop CPU.

The policy is a random tiny Llama (make_tiny_checkpoint). The task: write completions full of one target letter.
The reward of a completion is the fraction of its characters that are the target letter, so a random model
scores a few percent and the reward can rise to 1. Nothing here is about multiple-choice questions; the point is to
watch the GRPO machinery work: LoRA updates, group advantages, KL to the base model, checkpoints, logs.

    python examples/train_grpo_toy.py                  # 60 steps, well under a minute on 2 CPU cores
    python examples/train_grpo_toy.py --steps 40 --letter e --beta 0
    torchrun --nproc_per_node 2 examples/train_grpo_toy.py --run-dir runs/toy   # data-parallel, the same run

Under torchrun, --prompts-per-step is the global batch (each process rolls out a share of whole groups) and the
run is the one a single process makes, up to float rounding: same rewards, same adapter.

What to look at:
  - the progress bar, and the table printed every --print-every steps: `reward` should climb (from ~0.06 towards 1), `kl` grows from 0 as the adapter moves away from the base model;
  - `loss` stays near 0: with one update per batch the ratio is 1 and the centred advantages average out, so the
    loss value is beta * KL, not a training signal (the gradient is not 0);
  - run_dir/metrics.jsonl (one JSON row per step), run_dir/samples.jsonl (completions with their rewards),
    run_dir/checkpoints/ (PEFT adapter + optimizer state; rerun with --resume to continue), and the final
    adapter in PEFT format in --run-dir/adapter.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.distributed import broadcast_object, is_main, main_process_first, setup
from minigrpo.grpo.trainer import GRPOTrainer
from minigrpo.lora import save_adapter
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer


def letter_fraction(letter):
    """Reward: fraction of the completion's non-space characters equal to `letter` (0 for an empty completion)."""

    def reward(completions, items):
        out = []
        for text in completions:
            chars = [ch for ch in text.lower() if not ch.isspace()]
            out.append(sum(ch == letter for ch in chars) / len(chars) if chars else 0.0)
        return torch.tensor(out, dtype=torch.float32)

    reward.__name__ = f"letter_{letter}"
    return reward


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="GRPO steps (generation batches)")
    ap.add_argument("--letter", default="a", help="the letter the reward counts")
    ap.add_argument("--prompts-per-step", type=int, default=4,
                    help="prompts per step (under torchrun: over all processes, a multiple of their number)")
    ap.add_argument("--generations", type=int, default=6, help="K, completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="completion length cap")
    ap.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate of the LoRA weights (high: a tiny toy task)")
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0 skips the reference forward)")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    ap.add_argument("--seed", type=int, default=0, help="seed for the model, the data order and sampling")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--run-dir", default=None, help="where logs and checkpoints go (default: a temporary folder)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    ap.add_argument("--print-every", type=int, default=10, help="print a metrics line every this many steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    setup("cpu")  # under torchrun: join the process group now, so the processes can share the folder below

    # one folder for every process: rank 0 names it and writes the tiny checkpoint, the others then read it
    run_dir = Path(broadcast_object(args.run_dir or tempfile.mkdtemp(prefix="grpo_toy_") if is_main() else None))
    model_dir = run_dir / "tiny-llama"
    with main_process_first():
        if not (model_dir / "config.json").exists():
            make_tiny_checkpoint(model_dir, arch="llama", seed=args.seed)
    policy, tok = load_causal_lm(model_dir), load_tokenizer(model_dir)

    prompts = [f"Write the letter {args.letter}, many times: {i}" for i in range(16)]
    config = GRPOConfig(
        prompts_per_step=args.prompts_per_step, num_generations=args.generations,
        max_prompt_length=64, max_completion_length=args.max_new_tokens, max_steps=args.steps,
        learning_rate=args.lr, warmup_steps=0, lr_schedule="constant", beta=args.beta,
        lora_r=args.lora_r, lora_alpha=2.0 * args.lora_r, seed=args.seed, device="cpu",
        # A random tiny model's output head is frozen with rows of norm ~0.16, so adapters on attention alone
        # barely move its near-uniform next-token distribution; here the head gets an adapter too.
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "lm_head"),
        run_dir=str(run_dir / "run"), save_interval=50, sample_interval=20, resume=args.resume)
    trainer = GRPOTrainer(policy, tok, {"letter": letter_fraction(args.letter)}, prompts, lambda p: p, config)
    if is_main():
        print(f"run folder: {run_dir / 'run'}")
    rows = trainer.train()  # every process returns the same rows: the global batch's
    if not is_main():
        return
    save_adapter(policy, run_dir / "adapter", base_model_name_or_path=str(model_dir))

    print(f"\n{'step':>5} {'reward':>8} {'kl':>8} {'loss':>9} {'len':>5}")
    for r in rows:
        if r["step"] % args.print_every == 0 or r["step"] == rows[-1]["step"]:
            print(f"{r['step']:5d} {r['reward']:8.3f} {r['kl'] or 0.0:8.4f} {r['loss']:9.5f} "
                  f"{r['completion_length/mean']:5.1f}")
    if len(rows) >= 20:
        first = sum(r["reward"] for r in rows[:10]) / 10
        last = sum(r["reward"] for r in rows[-10:]) / 10
        print(f"\nmean reward, first 10 steps: {first:.3f}   last 10 steps: {last:.3f}   (it should rise)")
    last_samples = [s for s in trainer.samples.read() if s["step"] == max(s["step"] for s in trainer.samples.read())]
    for s in last_samples[:3]:
        print(f"step {s['step']} sample: {s['completion']!r} -> reward {s['total']:.3f}")
    print(f"logs: {run_dir / 'run' / 'metrics.jsonl'}, samples: {run_dir / 'run' / 'samples.jsonl'}, "
          f"adapter: {run_dir / 'adapter'}")


if __name__ == "__main__":
    main()
