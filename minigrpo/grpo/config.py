"""GRPOConfig: every knob of a GRPO run, one frozen dataclass, checked before any compute.

The defaults are the paper's setup (K = 6 completions per prompt, LoRA r = 32 / alpha = 64 on q/k/v/o, every
reward weighted 1, 1000 steps) plus DeepSeekMath's beta = 0.04. Each field carries its help text in
`field(metadata={"help": ...})`; `GRPOConfig.help()` prints them all.

Counting. One *step* is one generation batch: `prompts_per_step` prompts x `num_generations` completions, scored,
then used for `num_iterations` (mu) optimizer updates. Each update accumulates gradients over
`gradient_accumulation_steps` equal micro-batches of the batch's rows. The learning-rate schedule therefore runs
over max_steps * num_iterations optimizer updates.
"""

import dataclasses
import math
import os
from dataclasses import dataclass, field

from .advantages import SCALES
from .loss import LOSS_TYPES

SCHEDULES = ("constant", "cosine")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True)
class GRPOConfig:
    # ---- sampling: what one step generates ----
    prompts_per_step: int = _f(4, "Prompts sampled per step; the generation batch is prompts_per_step * num_generations rows. "
                                  "Under torchrun it is the global batch, split evenly over the ranks.")
    num_generations: int = _f(6, "K (G): completions sampled per prompt, the group the advantages are relative to. >= 2.")
    max_prompt_length: int = _f(512, "Prompt tokens kept; longer prompts lose their *beginning* (left truncation, as TRL), "
                                     "so the question, the options and the generation prompt at the end survive.")
    max_completion_length: int = _f(512, "New tokens generated at most per completion; also dr_grpo's normalizer.")
    temperature: float = _f(1.0, "Sampling temperature; log-probs are computed from logits / temperature as well (TRL).")
    top_p: float = _f(1.0, "Nucleus sampling threshold in (0, 1]; 1 disables it.")
    top_k: int = _f(0, "Sample among the k most likely tokens; 0 disables it.")

    # ---- objective ----
    beta: float = _f(0.04, "KL coefficient (k3 estimator against the adapter-free base model). 0 skips the reference forward.")
    eps_low: float = _f(0.2, "Lower clip: ratios below 1 - eps_low stop pushing down (A < 0). In [0, 1).")
    eps_high: float | None = _f(None, "Upper clip: ratios above 1 + eps_high stop pushing up (A > 0). None = eps_low; DAPO uses 0.28.")
    loss_type: str = _f("grpo", "Token aggregation: grpo (mean of per-sequence token means), bnpo, dr_grpo, dapo.")
    num_iterations: int = _f(1, "mu: optimizer updates per generation batch. >1 computes old log-probs and clipping acts.")
    scale_rewards: str = _f("group", "Advantage scaling: group ((r-mean)/std per group), batch (batch std), none (Dr. GRPO).")
    std_floor: float = _f(0.0, "Floor on the std the advantages divide by, in reward units; 0 reproduces TRL.")
    adv_eps: float = _f(1e-4, "Added to the std before dividing (TRL: 1e-4).")
    reward_weights: dict | None = _f(None, "Weight per reward name; None (or a missing name) means 1: the paper's "
                                           "unweighted sum of semantic + correctness + format + cot.")

    # ---- LoRA ----
    lora_r: int = _f(32, "LoRA rank (paper: 32). Used only if the policy has no adapters yet.")
    lora_alpha: float = _f(64.0, "LoRA alpha; scaling = alpha / r (paper: 64).")
    lora_dropout: float = _f(0.0, "Dropout on the adapter input; generation runs in eval mode so it never samples with it.")
    lora_targets: tuple = _f(("q_proj", "k_proj", "v_proj", "o_proj"), "Module names that receive adapters.")

    # ---- optimisation ----
    max_steps: int = _f(1000, "Generation steps to run (paper: 1000).")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per update: the batch's rows are split in this many equal "
                                             "parts whose gradients add up to the full batch's (under torchrun: "
                                             "each rank's share of the rows).")
    learning_rate: float = _f(1e-5, "AdamW lr for the LoRA weights. 1e-5: LoRA wants ~10x the lr of full fine-tuning "
                                    "(GRPO full fine-tunes use ~1e-6; TRL's 'LoRA without regret' uses 1e-5..5e-5).")
    lr_schedule: str = _f("cosine", "constant or cosine (decay to min_lr_ratio * lr), both after linear warmup.")
    warmup_steps: int = _f(10, "Optimizer updates of linear warmup from lr / warmup_steps to lr.")
    min_lr_ratio: float = _f(0.1, "Cosine floor as a fraction of learning_rate.")
    weight_decay: float = _f(0.0, "AdamW decoupled weight decay on the LoRA weights.")
    adam_betas: tuple = _f((0.9, 0.99), "AdamW (beta1, beta2).")
    max_grad_norm: float | None = _f(1.0, "Clip the global gradient norm of the LoRA weights; None disables.")

    # ---- compute ----
    device: str = _f("auto", "cpu, cuda, cuda:N, or auto (cuda if available).")
    dtype: str = _f("auto", "Autocast dtype for forward passes: float32 (none), bfloat16, float16, or auto "
                            "(bfloat16 on a GPU that supports it, float32 on CPU). LoRA weights stay float32.")
    merge_for_generation: bool | None = _f(None, "Sample from W + s*B@A merged into the base weights (faster decoding: "
                                                 "no adapter matmuls per token). The base weights are copied first and "
                                                 "restored bit for bit after, at the memory cost of the targeted weights. "
                                                 "None (auto) merges when those weights are float32, where the merged "
                                                 "sampler differs from the policy only by float32 rounding; a bf16 merge "
                                                 "rounds W + s*B@A to bf16, so auto leaves bf16 models unmerged.")
    gradient_checkpointing: bool = _f(False, "Recompute each decoder block in backward instead of storing its activations.")
    logprob_chunk_size: int | None = _f(None, "Rows (positions) projected onto the vocabulary at once when scoring tokens; "
                                              "None = about 2**24 / V rows (64 MiB of float32 logits per chunk); 0 = the "
                                              "plain path, a float32 log_softmax over full (B, T, V) logits.")
    seed: int = _f(0, "Seeds prompt order, sampling and adapter init.")
    dist_timeout: int = _f(600, "Under torchrun: seconds a collective waits for the other ranks before the run fails, "
                                "so a rank that dies or stalls never leaves the others hanging.")

    # ---- logging and checkpoints ----
    run_dir: str = _f("runs/grpo", "Folder for metrics.jsonl, samples.jsonl, config.json and checkpoints/.")
    sample_interval: int = _f(10, "Write sample completions to samples.jsonl every this many steps; 0 never.")
    num_samples: int = _f(4, "Completions written per sample_interval.")
    save_interval: int = _f(100, "Checkpoint every this many steps (and always at the end); 0 = only at the end.")
    save_total_limit: int = _f(2, "Numbered checkpoints kept on disk (oldest deleted first); >= 1.")
    resume: bool = _f(False, "Continue from run_dir's latest checkpoint; metrics.jsonl is cut back to that step.")
    progress: bool = _f(True, "Show a tqdm progress bar.")

    def __post_init__(self):
        # A list where a tuple is meant (JSON has no tuples) is kept as the tuple; a bare string is NOT split into
        # characters: it is reported below. A path-like run_dir is kept as its string, so to_dict stays JSON.
        for name in ("lora_targets", "adam_betas"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.run_dir, os.PathLike):
            object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        errors = list(_problems(self))
        if errors:
            raise ValueError("GRPOConfig: " + "; ".join(errors))

    # ---- derived ----
    @property
    def batch_rows(self) -> int:
        """Completions per step: prompts_per_step * num_generations."""
        return self.prompts_per_step * self.num_generations

    @property
    def micro_batch_rows(self) -> int:
        """Rows of a micro-batch on one process; under torchrun each rank's micro-batches are 1 / W of it."""
        return self.batch_rows // self.gradient_accumulation_steps

    @property
    def total_updates(self) -> int:
        return self.max_steps * self.num_iterations

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"], d["adam_betas"] = list(self.lora_targets), list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GRPOConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"GRPOConfig: unknown keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**d)  # lists become tuples in __post_init__; a string lora_targets is an error there

    @classmethod
    def help(cls) -> str:
        return "\n".join(f"{f.name} = {f.default!r}: {f.metadata['help']}" for f in dataclasses.fields(cls))


def _is_int(x, lo):
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _is_real(x):
    """A finite int or float (not a bool): NaN and inf mean nothing as a rate, a weight or a temperature."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _problems(c):
    """Yield one message per field or combination that cannot work, naming the fields and the values found.

    Every float field must be finite: an inf learning rate or a NaN reward weight would reach the optimizer, and a
    NaN adapter would then be saved as the run's last state. The switches (resume, progress,
    gradient_checkpointing) must be real bools, because a string such as "no" is truthy.
    """
    is_int = _is_int
    for name, lo in (("prompts_per_step", 1), ("max_prompt_length", 1), ("max_steps", 1), ("num_iterations", 1),
                     ("gradient_accumulation_steps", 1), ("lora_r", 1), ("top_k", 0), ("warmup_steps", 0),
                     ("sample_interval", 0), ("num_samples", 0), ("save_interval", 0), ("save_total_limit", 1),
                     ("dist_timeout", 1)):
        if not is_int(getattr(c, name), lo):
            yield f"{name} must be an int >= {lo}, found {getattr(c, name)!r}"
    for name in ("resume", "progress", "gradient_checkpointing"):
        if not isinstance(getattr(c, name), bool):
            yield f"{name} must be True or False, found {getattr(c, name)!r}"
    if not isinstance(c.merge_for_generation, (bool, type(None))):
        yield f"merge_for_generation must be None (auto), True or False, found {c.merge_for_generation!r}"
    if c.logprob_chunk_size is not None and not is_int(c.logprob_chunk_size, 0):
        yield f"logprob_chunk_size must be None or an int >= 0, found {c.logprob_chunk_size!r}"
    if not is_int(c.num_generations, 2):
        yield (f"num_generations must be an int >= 2 (advantages compare a completion with its siblings; a group "
               f"of one has no signal), found {c.num_generations!r}")
    if not is_int(c.max_completion_length, 1):
        extra = " (loss_type 'dr_grpo' divides by it)" if c.loss_type == "dr_grpo" else ""
        yield f"max_completion_length must be an int >= 1{extra}, found {c.max_completion_length!r}"
    if (is_int(c.prompts_per_step, 1) and is_int(c.num_generations, 2) and is_int(c.gradient_accumulation_steps, 1)
            and c.batch_rows % c.gradient_accumulation_steps):
        yield (f"prompts_per_step * num_generations = {c.prompts_per_step} * {c.num_generations} = {c.batch_rows} rows "
               f"do not split into gradient_accumulation_steps = {c.gradient_accumulation_steps} equal micro-batches")
    for name, allowed in (("loss_type", LOSS_TYPES), ("scale_rewards", SCALES), ("lr_schedule", SCHEDULES),
                          ("dtype", DTYPES)):
        if not isinstance(getattr(c, name), str) or getattr(c, name) not in allowed:
            yield f"{name} must be one of {allowed}, found {getattr(c, name)!r}"
    yield from _float_problems(c)
    if not (isinstance(c.adam_betas, tuple) and len(c.adam_betas) == 2
            and all(_is_real(b) and 0 <= b < 1 for b in c.adam_betas)):
        yield f"adam_betas must be two numbers in [0, 1), found {c.adam_betas!r}"
    if not (isinstance(c.lora_targets, tuple) and c.lora_targets
            and all(isinstance(t, str) and t.strip() for t in c.lora_targets)):
        # A single string is refused rather than taken as one name: PEFT reads a string target_modules as a
        # regular expression over full module names, so either reading would surprise someone.
        yield (f"lora_targets must be a non-empty tuple (or list) of module names such as ('q_proj', 'v_proj'), "
               f"found {c.lora_targets!r}")
    if c.reward_weights is not None:
        if not isinstance(c.reward_weights, dict):
            yield f"reward_weights must be None or a dict name -> number, found {c.reward_weights!r}"
        else:
            bad = {k: v for k, v in c.reward_weights.items() if not _is_real(v)}
            if bad:
                yield f"reward_weights must map names to finite numbers, found {bad}"
    yield from _device_problems(c)
    if not (isinstance(c.run_dir, str) and c.run_dir.strip()):
        yield (f"run_dir must be a non-empty path (an empty one would write into the working directory), "
               f"found {c.run_dir!r}")


def _float_problems(c):
    """Ranges of the float fields; every one must also be finite (see _problems)."""
    for name in ("beta", "std_floor", "adv_eps", "weight_decay", "lora_dropout"):
        v = getattr(c, name)
        if not (_is_real(v) and v >= 0):
            yield f"{name} must be a number >= 0 and finite, found {v!r}"
    if _is_real(c.lora_dropout) and c.lora_dropout >= 1:
        yield f"lora_dropout must be < 1, found {c.lora_dropout!r}"
    for name in ("temperature", "learning_rate", "lora_alpha"):
        v = getattr(c, name)
        if not (_is_real(v) and v > 0):
            yield f"{name} must be a number > 0 and finite, found {v!r}"
    if not (_is_real(c.eps_low) and 0 <= c.eps_low < 1):
        yield f"eps_low must be in [0, 1), found {c.eps_low!r}"
    if c.eps_high is not None and not (_is_real(c.eps_high) and c.eps_high >= 0):
        yield f"eps_high must be >= 0 and finite, or None, found {c.eps_high!r}"
    if not (_is_real(c.top_p) and 0 < c.top_p <= 1):
        yield f"top_p must be in (0, 1], found {c.top_p!r}"
    if not (_is_real(c.min_lr_ratio) and 0 <= c.min_lr_ratio <= 1):
        yield f"min_lr_ratio must be in [0, 1], found {c.min_lr_ratio!r}"
    if c.max_grad_norm is not None and not (_is_real(c.max_grad_norm) and c.max_grad_norm > 0):
        yield f"max_grad_norm must be > 0 or None (no clipping), and finite, found {c.max_grad_norm!r}"


def _device_problems(c):
    d = c.device
    if not isinstance(d, str):
        yield f"device must be a string (cpu, cuda, cuda:N, mps or auto), found {d!r}"
        return
    index = d.split(":", 1)[1] if d.startswith("cuda:") else "0"
    if d not in ("auto", "cpu", "cuda", "mps") and not (d.startswith("cuda:") and index.isdigit()):
        yield f"device must be cpu, cuda, cuda:N, mps or auto, found {d!r}"
    if c.dtype == "float16" and d == "cpu":
        yield "dtype 'float16' autocast is not supported on device 'cpu'; use float32 or bfloat16"
