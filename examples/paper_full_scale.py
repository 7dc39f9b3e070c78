"""The paper's GRPO configuration, run from local checkpoint folders (nothing is downloaded):

    policy   DeepSeek-R1-Distill-Llama-8B (or an SFT'd fine-tune of it), bf16, its own chat template (<think>)
    encoder  Qwen3-Embedding-0.6B, frozen, last-token pooling, L2-normalised (the Qwen3-Embedding recipe)
    GRPO     K = 6 completions per prompt, LoRA r = 32 / alpha = 64 on q/k/v/o, beta = 0.04, 1000 steps,
             reward = semantic + correctness + format + CoT, unweighted (--reward picks the explanation reward)

Steps: print a memory estimate for one 80 GB GPU (--estimate-only stops there); optionally SFT the policy on the
train items (--sft-steps, LoRA merged back into the weights); evaluate greedily on the held-out items; GRPO;
evaluate again. Prompts follow DeepSeek-R1's advice: no system prompt, the instructions open the user turn; the
template's generation prompt already opens <think>, so completions are in R1_FORMAT.

Look at: the memory verdict (without --gradient-checkpointing the 8B training forward does not fit), then the
held-out table: accuracy, format rate and each reward component before and after GRPO. --out gets results.json,
grpo/ (metrics.jsonl, samples.jsonl, checkpoints/) and adapter/ (PEFT format, loads onto the transformers model).

    python examples/paper_full_scale.py --policy ckpt/DeepSeek-R1-Distill-Llama-8B \\
        --encoder ckpt/Qwen3-Embedding-0.6B --train data/train.jsonl --eval data/eval.jsonl \\
        --out runs/full --gradient-checkpointing

Several GPUs (one node; for several nodes add --nnodes, --node_rank and --rdzv_endpoint, with --out on a
filesystem every node sees): the same command under torchrun, one process per GPU,

    torchrun --nproc_per_node 4 examples/paper_full_scale.py --policy ... --prompts-per-step 8 ...

--prompts-per-step stays the GLOBAL batch (a multiple of the number of GPUs): each GPU rolls out, scores and
trains on its share of whole groups, and the run (rewards, adapter) is the one a single GPU would make, up to
the order of float sums. Each GPU (rank) holds in memory:
    replicated    the whole bf16 policy (16.06 GB), the encoder (1.19 GB), the LoRA weights, gradients and AdamW
                  moments (0.44 GB), and a flat float32 copy of the LoRA gradients while they are all-reduced
                  (27M floats, 0.11 GB)
    its share     the KV cache and the training activations of prompts-per-step / GPUs prompts x K completions
so more GPUs shrink only the batch-dependent part: the estimate printed first is per GPU, for its share (for the
paper's 4 x 6 rows: 35.2 GB on 1 GPU, 26.6 GB each on 2, 22.3 GB each on 4). SFT (--sft-steps) and the held-out
evaluations run on every GPU (the same work, no waiting on each other); rank 0 writes every file.
"""

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path

import torch

from minigrpo.data import DEFAULT_SYSTEM_PROMPT, R1_FORMAT, load_mcq_jsonl, render_prompt, sft_target
from minigrpo.eval import evaluate_policy
from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.distributed import broadcast_parameters, is_main, setup, world_size
from minigrpo.grpo.logprobs import CHUNK_ELEMENTS
from minigrpo.grpo.trainer import GRPOTrainer
from minigrpo.lora import inject_lora, merge_and_unload, save_adapter
from minigrpo.models import ModelConfig, load_causal_lm, load_encoder, load_tokenizer, save_model
from minigrpo.rewards import paper_rewards
from minigrpo.train import run_sft

GB = 1e9  # decimal gigabytes, as GPU memory is sold ("80 GB")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="local DeepSeek-R1-Distill-Llama-8B folder (config.json, "
                                                   "safetensors, tokenizer.json with its chat template)")
    p.add_argument("--encoder", required=True, help="local Qwen3-Embedding-0.6B folder")
    p.add_argument("--train", help="train MCQ items, JSONL in minigrpo.data's format (not needed with --estimate-only)")
    p.add_argument("--eval", help="held-out MCQ items, JSONL (not needed with --estimate-only)")
    p.add_argument("--out", default="runs/full_scale", help="run directory (created)")
    p.add_argument("--steps", type=int, default=1000, help="GRPO steps (paper: 1000)")
    p.add_argument("--num-generations", type=int, default=6, help="K completions per prompt (paper: 6)")
    p.add_argument("--prompts-per-step", type=int, default=4, help="prompts per GRPO step; the generation batch is "
                                                                   "prompts-per-step x num-generations rows")
    p.add_argument("--lora-r", type=int, default=32, help="LoRA rank (paper: 32)")
    p.add_argument("--lora-alpha", type=float, default=64.0, help="LoRA alpha (paper: 64)")
    p.add_argument("--max-prompt-length", type=int, default=512, help="prompt tokens kept (left truncation)")
    p.add_argument("--max-completion-length", type=int, default=1024,
                   help="new tokens per completion, in GRPO and at evaluation (R1 models reason at length)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate of the LoRA weights")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient against the adapter-free model")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (DeepSeek-R1 advises 0.6)")
    p.add_argument("--reward", default="semantic", choices=["semantic", "rouge", "semantic+rouge"],
                   help="explanation reward, summed with correctness + format + CoT")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES),
                   help="weights and forward dtype of policy and encoder (LoRA weights stay float32)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each decoder block in backward (needed to fit the 8B training forward)")
    p.add_argument("--resume", action="store_true", help="continue the GRPO run in --out from its latest checkpoint")
    p.add_argument("--sft-steps", type=int, default=0, help="LoRA SFT steps on the train items before GRPO, merged "
                                                           "into the weights; 0 = skip (the policy is already SFT'd)")
    p.add_argument("--sft-batch-size", type=int, default=8, help="SFT examples per step")
    p.add_argument("--sft-lr", type=float, default=1e-4, help="SFT learning rate of the LoRA weights")
    p.add_argument("--eval-items", type=int, default=0, help="evaluate on the first N held-out items; 0 = all")
    p.add_argument("--save-interval", type=int, default=100, help="GRPO checkpoint every N steps (and at the end)")
    p.add_argument("--seed", type=int, default=0, help="seeds prompt order, sampling and adapter init")
    p.add_argument("--estimate-only", action="store_true", help="print the memory estimate and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- memory estimate

def count_params(cfg, head=True):
    """Parameters of a Llama / Qwen3 model from its config (head=False: the bare body, as an encoder).

        P = V*C (embeddings) + L * P_block + C (final norm) + [V*C if head and not tied]
        P_block = C*H*D + 2*C*Hkv*D + H*D*C          q, k, v, o
                + 3*C*I                                gate, up, down
                + 2*C  [+ 2*D with qk_norm]            norms
                [+ H*D + 2*Hkv*D + C with attention_bias] [+ 2*I + C with mlp_bias]
    """
    C, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    HD, KD = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    block = C * HD + 2 * C * KD + HD * C + 3 * C * I + 2 * C
    block += 2 * cfg.head_dim if cfg.qk_norm else 0
    block += (HD + 2 * KD + C) if cfg.attention_bias else 0
    block += (2 * I + C) if cfg.mlp_bias else 0
    untied_head = head and not cfg.tie_word_embeddings
    return V * C + L * block + C + (V * C if untied_head else 0)


def lora_param_count(cfg, r, targets):
    """sum over layers and targets of r * (in + out): A is (r, in), B is (out, r)."""
    C, I = cfg.hidden_size, cfg.intermediate_size
    HD, KD = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = {"q_proj": (C, HD), "k_proj": (C, KD), "v_proj": (C, KD), "o_proj": (HD, C),
              "gate_proj": (C, I), "up_proj": (C, I), "down_proj": (I, C)}
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"estimate_memory_gb: unknown LoRA targets {unknown}; expected names from {sorted(shapes)}")
    return cfg.num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)


def estimate_memory_gb(policy_config, encoder_config, *, lora_r, targets, batch_rows, prompt_len, completion_len,
                       dtype_bytes=2, gradient_checkpointing, logprob_chunk_size, budget_gb=80.0, headroom=0.9):
    """GPU memory of one GRPO step, in GB (1e9 bytes), component by component, from the two ModelConfigs.

    Notation: b = dtype_bytes, L layers, C width, H / Hkv heads, D head dim, I MLP width, V vocab of the policy;
    R = batch_rows (completions generated and trained on together), T = prompt_len + completion_len, r = lora_r.

      policy_weights    count_params(policy) * b
      encoder_weights   count_params(encoder body, no head) * b
      lora_state        P_lora * (4 + 4 + 8): fp32 weights, fp32 grads, AdamW's two fp32 moments;
                        P_lora = L * sum over targets of r * (in + out)
      kv_cache          L * 2 (k and v) * R * Hkv * D * T * b: generate() preallocates prompt + completion
      activations       what autograd keeps for backward in the training forward over R rows of T tokens. Per
                        decoder block and token (the base weights are frozen, so a frozen linear keeps nothing
                        of its input for a weight gradient, but the LoRA-wrapped ones keep their input):
                          2 RMSNorms      2 * C * (4 + b)      float32 input of the mean of squares + cast output
                          attention       5 * H * D * b        q; k, v expanded to H heads (padded batches carry
                                                               a mask, and the masked fused kernels take no
                                                               grouped heads); the output; o_proj's input
                                        + 4 * H                the kernel's float32 logsumexp
                          LoRA            n_targets * r * b    the A outputs, input to B
                          SwiGLU MLP      3 * I * b            gate, up, silu(gate)
                        plus per block R * T * T * b: the boolean pad mask becomes an additive bias of the compute
                        dtype inside attention, kept for its backward; plus the final norm R * T * C * (4 + b).
                        Without checkpointing:  L * (R*T*a_tok + R*T*T*b) + R*T*C*(4 + b)
                        With checkpointing:     L * R*T*C*b (each block's input) + R*T*T (the bool mask, shared)
                                                + R*T*a_tok + R*T*T*b (one block recomputed during backward)
                                                + R*T*C*(4 + b)
                        This is a count of saved tensors, not a measurement: framework temporaries inside one op,
                        the no-grad reference / old forwards (transient, one block at a time) and allocator
                        fragmentation are left to the headroom below.
      logprob_chunks    rows_chunk * V * 4 * 4: four float32 (rows, V) buffers of the chunk being scored (logits
                        upcast, softmax, log-softmax, its gradient); rows_chunk = logprob_chunk_size, or
                        2**24 // V when None (the trainer's default), or R * completion_len for the plain path (0)

    Generation and training do not overlap (the KV cache is freed before the training forward), so
        total = policy + encoder + lora_state + max(kv_cache, activations + logprob_chunks)
    and the run fits when total <= headroom * budget_gb (the rest: CUDA context, temporaries, fragmentation).
    Returns the components (GB), generation_phase / training_phase / total (GB), budget_gb, fits (bool) and the
    parameter counts policy_params / encoder_params / lora_params.
    """
    pc, b = policy_config, dtype_bytes
    C, I, L, V = pc.hidden_size, pc.intermediate_size, pc.num_hidden_layers, pc.vocab_size
    H, Hkv, D = pc.num_attention_heads, pc.num_key_value_heads, pc.head_dim
    R, T = batch_rows, prompt_len + completion_len
    targets = tuple(targets)

    policy_params, encoder_params = count_params(pc), count_params(encoder_config, head=False)
    lora_params = lora_param_count(pc, lora_r, targets)
    kv_cache = L * 2 * R * Hkv * D * T * b

    a_tok = 2 * C * (4 + b) + 5 * H * D * b + 4 * H + len(targets) * lora_r * b + 3 * I * b  # bytes / token / block
    one_block = R * T * a_tok + R * T * T * b
    final_norm = R * T * C * (4 + b)
    if gradient_checkpointing:
        activations = L * R * T * C * b + R * T * T + one_block + final_norm
    else:
        activations = L * one_block + final_norm
    if logprob_chunk_size is None:
        chunk_rows = max(1, CHUNK_ELEMENTS // V)
    elif logprob_chunk_size == 0:
        chunk_rows = R * completion_len
    else:
        chunk_rows = logprob_chunk_size
    logprob_chunks = chunk_rows * V * 4 * 4

    static = policy_params * b + encoder_params * b + lora_params * (4 + 4 + 8)
    generation, training = kv_cache, activations + logprob_chunks
    total = static + max(generation, training)
    return {
        "policy_weights": policy_params * b / GB, "encoder_weights": encoder_params * b / GB,
        "lora_state": lora_params * 16 / GB, "kv_cache": kv_cache / GB, "activations": activations / GB,
        "logprob_chunks": logprob_chunks / GB, "generation_phase": (static + generation) / GB,
        "training_phase": (static + training) / GB, "total": total / GB, "budget_gb": budget_gb,
        "fits": total / GB <= headroom * budget_gb,
        "policy_params": policy_params, "encoder_params": encoder_params, "lora_params": lora_params,
    }


def format_estimate(est, gradient_checkpointing, headroom=0.9, gpus=1):
    share = f", each of {gpus} holding 1/{gpus} of the batch" if gpus > 1 else ""
    lines = [f"memory estimate for one {est['budget_gb']:.0f} GB GPU{share} (GB = 1e9 bytes):"]
    for key, label in (("policy_weights", f"policy weights ({est['policy_params'] / 1e9:.2f}B params)"),
                       ("encoder_weights", f"encoder weights ({est['encoder_params'] / 1e9:.2f}B params)"),
                       ("lora_state", f"LoRA weights + grads + AdamW, fp32 ({est['lora_params']:,} params)"),
                       ("kv_cache", "KV cache (generation)"),
                       ("activations", "activations (training forward, "
                                       + ("checkpointed)" if gradient_checkpointing else "no checkpointing)")),
                       ("logprob_chunks", "log-prob chunks"),
                       ("generation_phase", "peak while generating"), ("training_phase", "peak while training")):
        lines.append(f"  {label:<62} {est[key]:8.2f}")
    verdict = "fits" if est["fits"] else "does NOT fit"
    lines.append(f"  {'total (the larger phase)':<62} {est['total']:8.2f}  -> {verdict} in "
                 f"{headroom:.0%} of {est['budget_gb']:.0f} GB")
    if not est["fits"] and not gradient_checkpointing:
        lines.append("  try --gradient-checkpointing, or fewer --prompts-per-step / a shorter --max-completion-length")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the run

def sft_reasoning(item):
    """A one-sentence reasoning for the SFT target: the JSONL items carry no reasoning traces of their own."""
    return (f"The question asks which option is correct. Option {item.answer} says: "
            f"{item.options[item.answer].strip()}. That is the correct option, so the answer is {item.answer}.")


def sft_with_merged_lora(policy, tokenizer, items, prompt_fn, args, autocast):
    """LoRA SFT (full fine-tuning an 8B with AdamW needs ~130 GB), then fold W + s*B@A back into each base linear
    and unwrap it (merge_and_unload), so GRPO starts from plain weights with fresh adapters."""
    inject_lora(policy, r=args.lora_r, alpha=args.lora_alpha, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    policy.to(args.device)
    prompts = [prompt_fn(it) for it in items]
    targets = [sft_target(it, R1_FORMAT, sft_reasoning(it)) for it in items]
    with autocast():
        losses = run_sft(policy, tokenizer, prompts, targets, steps=args.sft_steps, batch_size=args.sft_batch_size,
                         lr=args.sft_lr, max_length=args.max_prompt_length + args.max_completion_length,
                         seed=args.seed, progress=not args.quiet)
    merge_and_unload(policy)
    return losses


def main(argv=None):
    args = parse_args(argv)
    args.device = str(setup(args.device))  # under torchrun: join the process group, take cuda:LOCAL_RANK
    torch.manual_seed(args.seed)
    run, t_start = Path(args.out), time.perf_counter()
    dtype = DTYPES[args.dtype]
    policy_cfg, encoder_cfg = ModelConfig.from_pretrained(args.policy), ModelConfig.from_pretrained(args.encoder)
    config = GRPOConfig(
        run_dir=str(run / "grpo"), max_steps=args.steps, prompts_per_step=args.prompts_per_step,
        num_generations=args.num_generations, max_prompt_length=args.max_prompt_length,
        max_completion_length=args.max_completion_length, temperature=args.temperature, beta=args.beta,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, learning_rate=args.lr, device=args.device,
        dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing, resume=args.resume,
        save_interval=args.save_interval, seed=args.seed, progress=not args.quiet)
    estimate = estimate_memory_gb(  # per GPU: its share of the global batch
        policy_cfg, encoder_cfg, lora_r=config.lora_r, targets=config.lora_targets,
        batch_rows=config.batch_rows // world_size(),
        prompt_len=config.max_prompt_length, completion_len=config.max_completion_length,
        dtype_bytes=torch.finfo(dtype).bits // 8, gradient_checkpointing=config.gradient_checkpointing,
        logprob_chunk_size=config.logprob_chunk_size)
    if is_main():
        print(format_estimate(estimate, config.gradient_checkpointing, gpus=world_size()))
    if args.estimate_only:
        return {"memory_estimate": estimate}
    if not (args.train and args.eval):
        raise SystemExit("paper_full_scale.py: --train and --eval are required unless --estimate-only is given")

    if not args.resume and (run / "grpo" / "metrics.jsonl").exists():  # fail before minutes of loading, not after
        raise SystemExit(f"paper_full_scale.py: {run / 'grpo'} already holds a run; pass --resume or another --out")
    run.mkdir(parents=True, exist_ok=True)
    train_items, eval_items = load_mcq_jsonl(args.train), load_mcq_jsonl(args.eval)
    if args.eval_items:
        eval_items = eval_items[:args.eval_items]
    if is_main():
        print(f"data: {len(train_items)} train / {len(eval_items)} held-out items")
    results_path = run / "results.json"
    previous = json.loads(results_path.read_text()) if args.resume and results_path.exists() else {}
    results = {"args": vars(args), "memory_estimate": estimate}

    tok = load_tokenizer(args.policy)
    policy = load_causal_lm(args.policy, dtype=dtype, device=args.device)
    encoder = load_encoder(args.encoder, pooling="last", dtype=dtype, device=args.device)
    reward_fns = paper_rewards(encoder, R1_FORMAT, variant=args.reward)
    # DeepSeek-R1: no system prompt; the role line and the format instructions open the user turn
    prompt_fn = functools.partial(render_prompt, tokenizer=tok, fmt=R1_FORMAT, system_prompt=DEFAULT_SYSTEM_PROMPT,
                                  system_in_user=True)
    # SFT and evaluation run under the same autocast as GRPO's forwards (fp32 LoRA weights meet bf16 activations)
    use_amp = dtype != torch.float32 and not args.device.startswith("cpu")
    device_type = torch.device(args.device).type
    autocast = (lambda: torch.autocast(device_type=device_type, dtype=dtype)) if use_amp else contextlib.nullcontext
    evaluate = functools.partial(evaluate_policy, tokenizer=tok, items=eval_items, prompt_fn=prompt_fn,
                                 reward_fns=reward_fns, max_new_tokens=args.max_completion_length,
                                 max_prompt_length=args.max_prompt_length, batch_size=8)

    # ---- optional SFT (saved, so that --resume starts GRPO from the same weights) ----
    if args.sft_steps:
        sft_dir = run / "sft"
        if args.resume and (sft_dir / "config.json").exists():
            policy = load_causal_lm(sft_dir, dtype=dtype, device=args.device)
            done = f"sft: loaded {sft_dir}"
        else:
            if args.gradient_checkpointing:
                policy.model.gradient_checkpointing = True
            losses = sft_with_merged_lora(policy, tok, train_items, prompt_fn, args, autocast)
            policy.model.gradient_checkpointing = False
            broadcast_parameters(list(policy.parameters()))  # under torchrun: rank 0's SFT weights on every rank
            if is_main():
                save_model(policy, sft_dir, Path(args.policy) / "config.json", args.policy)
            results["sft"] = {"steps": args.sft_steps, "first_loss": losses[0], "last_loss": losses[-1]}
            done = f"sft: loss {losses[0]:.3f} -> {losses[-1]:.3f}, saved {sft_dir}"
        if is_main():
            print(done)
        if "sft" in previous and "sft" not in results:
            results["sft"] = previous["sft"]

    # ---- held-out evaluation, GRPO, evaluation again ----
    with autocast():
        results["before"] = previous.get("before") or evaluate(policy).as_dict()
    GRPOTrainer(policy, tok, reward_fns, train_items, prompt_fn, config).train()
    if is_main():
        save_adapter(policy, run / "adapter", base_model_name_or_path=str(args.policy))
    with autocast():
        results["after"] = evaluate(policy).as_dict()
    results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    if is_main():
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print_table(results, args.reward)
        print(f"wrote {results_path}, adapter in {run / 'adapter'}")
    return results


def print_table(results, reward):
    names = list(results["before"]["rewards"])
    header = f"{'stage':<7} {'accuracy':>8} {'format':>7} {'reward':>7} " + " ".join(f"{n:>11}" for n in names)
    print(f"\nheld-out evaluation (greedy), GRPO reward: {reward}\n{header}\n{'-' * len(header)}")
    for stage in ("before", "after"):
        r = results[stage]
        print(f"{stage:<7} {r['accuracy']:>8.3f} {r['format_rate']:>7.3f} {r['reward']:>7.3f} "
              + " ".join(f"{r['rewards'][n]:>11.3f}" for n in names))


if __name__ == "__main__":
    main()
