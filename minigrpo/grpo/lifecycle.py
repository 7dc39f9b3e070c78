"""A GRPO run's life around its steps (GRPOTrainer.train): opening run_dir, resuming, stopping at a failure.

A run starts in a run_dir that holds no run, or with resume=True continues from its newest checkpoint (resume.py
refuses a config that would change the run). A reward that fails or is not finite (RewardError), or a non-finite
loss or gradient norm (NonFinite), stops it before the optimizer steps with that value: the state from before the
step is saved as checkpoint step - 1, and TrainingStopped names the step and the component. Under torchrun rank 0
reads run_dir for every rank, so all of them resume from the same checkpoint (or refuse alike); only rank 0 writes.
"""

import copy
import json

import torch

from ..rewards import load_reward_state, reward_state
from .checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng
from .distributed import broadcast_object, is_main
from .resume import check_config, check_rewards


class TrainingStopped(RuntimeError):
    """A failing reward or a non-finite value stopped training. .step, .component, .checkpoint (the folder of the
    last good state)."""

    def __init__(self, message, step, component, checkpoint):
        super().__init__(message)
        self.step, self.component, self.checkpoint = step, component, checkpoint


class NonFinite(Exception):
    """A non-finite loss or gradient norm; .component names which."""

    def __init__(self, component, detail):
        super().__init__(detail)
        self.component = component


def open_run_dir(trainer):
    """Before the first step: create run_dir and write its config.json. With resume=True, continue from the newest
    checkpoint and cut metrics.jsonl and samples.jsonl back to its step; else refuse a run_dir that holds a run."""
    c, run_dir = trainer.config, trainer.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, logged = broadcast_object((latest_checkpoint(run_dir), bool(trainer.metrics.read())) if is_main()
                                    else None)
    if c.resume:  # no checkpoint yet: start from step 0, dropping rows a crashed first attempt logged
        if ckpt is not None and trainer.step == 0:
            _resume_from(trainer, ckpt)
        trainer.metrics.truncate_after(trainer.step)
        trainer.samples.truncate_after(trainer.step)
    elif trainer.step == 0 and (ckpt is not None or logged):
        raise FileExistsError(
            f"GRPOTrainer: run_dir {run_dir} already holds a run (checkpoints or metrics.jsonl); "
            f"pass resume=True to continue it, or choose another run_dir")
    if is_main():
        (run_dir / "config.json").write_text(json.dumps(c.to_dict(), indent=2))


def _resume_from(trainer, ckpt):
    check_config(ckpt, trainer.config)  # before anything is loaded
    state = load_checkpoint(ckpt, trainer.policy, trainer.optimizer, trainer.scheduler, map_location=trainer.device)
    check_rewards(ckpt, state["extra"].get("reward_weights"), trainer.reward_weights)
    restore_rng(state["rng"])  # sampling itself needs no state: its streams are keyed by the step
    load_reward_state(trainer.reward_fns, state["extra"].get("reward_state", {}))
    trainer.step = state["step"]


def last_good_state(trainer):
    """What a failed step rolls back to, taken before it: (RNG states, reward state, and with mu > 1 copies of the
    LoRA weights, optimizer and scheduler states, else None)."""
    rng, rewards = capture_rng(), reward_state(trainer.reward_fns)
    weights = None
    if trainer.config.num_iterations > 1:  # earlier updates of the step would already have changed these
        weights = ([p.detach().clone() for p in trainer.params], copy.deepcopy(trainer.optimizer.state_dict()),
                   copy.deepcopy(trainer.scheduler.state_dict()))
    return rng, rewards, weights


def stop(trainer, step, err, last_good):
    """Roll back to last_good (last_good_state), save it as checkpoint step - 1, raise TrainingStopped from err."""
    rng, rewards, weights = last_good
    if weights is not None:
        params, optimizer, scheduler = weights
        with torch.no_grad():
            for p, w in zip(trainer.params, params):
                p.copy_(w)
        trainer.optimizer.load_state_dict(optimizer)
        trainer.scheduler.load_state_dict(scheduler)
    load_reward_state(trainer.reward_fns, rewards)
    trainer.optimizer.zero_grad(set_to_none=True)
    path = trainer.save(step - 1, rng, rewards)
    raise TrainingStopped(
        f"training stopped at step {step}: {err.component}: {err}. The optimizer was not stepped with it; "
        f"the last good state (step {step - 1}) is saved in {path}", step, err.component, path) from err
