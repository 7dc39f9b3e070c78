"""Rollout throughput: new tokens per second of `minigrpo.generation.generate` against transformers' `generate()`.

Both decode the same random tiny Llama (weights written by transformers, loaded by minigrpo), from prompts of equal
length (unless --left-pad), sampling at temperature 1 with no top-k/top-p and no EOS, so both produce exactly
`--new-tokens` tokens per row. Each configuration is timed `--repeats` times after a warm-up run, ours and
transformers' alternating; the best time of each is reported (the least disturbed by other processes).

    python benchmarks/generation.py                       # batch 1 and 24, 2 threads
    python benchmarks/generation.py --profile --batch-sizes 24   # where our time goes (torch.profiler)
    python benchmarks/generation.py --left-pad            # prompts of different lengths, as in real rollouts

Look at the `ratio` column: ours / transformers tokens per second. `matmul-only bound` is transformers' time over
the time of the weight matmuls alone (every nn.Linear, one token per step): the ratio a decoder whose every other
op were free would reach.
"""

import argparse
import os
import tempfile
import time

import torch

from minigrpo.generation import generate
from minigrpo.models import load_causal_lm


def build_models(out_dir, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).eval()
    hf.generation_config.eos_token_id = None
    hf.save_pretrained(out_dir)
    return hf, load_causal_lm(out_dir).eval()


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
    """Best wall time of each function over `repeats` rounds; the functions alternate within a round, so a burst
    of load from other processes hits both sides alike."""
    for fn in fns:
        fn()  # warm-up: allocator, thread pool, lazy imports
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 24], help="rows decoded together")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size of the random model")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (best is kept)")
    parser.add_argument("--left-pad", action="store_true",
                        help="left-pad every other row by a random amount (prompts of different lengths)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of our decoding")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        hf, ours = build_models(tmp, args.vocab)
    print(f"random Llama: hidden 256, 4 layers, 4 heads / 2 kv heads, vocab {args.vocab}; prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, {args.threads} threads, best of {args.repeats}"
          f"{', left-padded' if args.left_pad else ''}; load average {os.getloadavg()[0]:.1f} (of {os.cpu_count()} cores)")
    print(f"{'batch':>5} {'ours tok/s':>11} {'transformers tok/s':>19} {'ratio':>6} {'matmul-only bound':>18}")
    for batch in args.batch_sizes:
        ids = torch.randint(2, args.vocab, (batch, args.prompt_len), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(ids)
        if args.left_pad:
            for row in range(1, batch, 2):
                mask[row, :int(torch.randint(1, args.prompt_len // 2, ()))] = 0
            ids = ids.masked_fill(mask == 0, 0)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_ours(ours, ids, mask, args.new_tokens)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        t_ours, t_hf, t_mm = best_times([lambda: run_ours(ours, ids, mask, args.new_tokens),
                                         lambda: run_transformers(hf, ids, mask, args.new_tokens),
                                         lambda: run_matmuls_only(ours, batch, args.new_tokens)], args.repeats)
        n = batch * args.new_tokens
        print(f"{batch:>5} {n / t_ours:>11.0f} {n / t_hf:>19.0f} {t_hf / t_ours:>5.2f}x {t_hf / t_mm:>17.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
