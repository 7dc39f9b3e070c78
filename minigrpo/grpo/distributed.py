"""Data-parallel GRPO under torchrun: the process group, and the few collectives one GRPO step needs.

    torchrun --nproc_per_node N train.py ...          (several nodes: --nnodes, --node_rank, --rdzv_endpoint)

starts N copies of the script with RANK, WORLD_SIZE and LOCAL_RANK in their environment. `setup` reads them,
joins the process group (nccl on CUDA, gloo on CPU) with a timeout, and puts the rank on cuda:LOCAL_RANK. Without
those variables the world size is 1: there is no process group and every helper below returns its input, so one
process runs the plain code.

What each of the W ranks does in a step (GRPOTrainer.train_step), P prompts per step (global), G per prompt:

    prompts     every rank computes the step's same P prompts (PromptSampler is a function of seed and step) and
                keeps its contiguous share [r P/W, (r + 1) P/W) (`shard`): whole groups, never a split one
    roll out    completion j of prompt p samples from a stream keyed by (seed, step, p, j) (rollout.rollout_seeds),
                so what a row samples depends neither on the rank nor on W
    score       the rank's own completions, with its own copy of every reward function (and of any encoder)
    advantages  `all_gather` the P*G total rewards; group_advantages over all of them, identical on every rank;
                each rank keeps its own rows (`own_rows`): exact for scale_rewards group, batch and none
    loss        micro-batches weighted by the GLOBAL row and token counts (`all_sum`), so the ranks' losses add
                up to the loss of the whole batch, for every loss_type
    gradients   `all_reduce_gradients`: the SUM over ranks of the LoRA gradients, once per update, after the
                micro-batches and before clipping; every rank then clips and steps the same global gradient, so
                the adapters stay identical without being broadcast again
    metrics     per-completion values gathered and sums summed, so rank 0 logs the global batch's row

Why all_reduce and not DistributedDataParallel. Only the LoRA tensors train: their gradients are a few MB (27M
floats for the paper's 8B setup), so DDP's bucketing and overlap of communication with the backward buy little,
while its hooks would fire on every micro-batch's backward (DDP needs no_sync() to accumulate). One all-reduce of
one flat buffer per update reads as the line of math it is: the gradient of the global batch is the sum of the
ranks' gradients, each already divided by the global normaliser.

Failures. `raise_together` makes an expected failure (a reward that raises or is not finite, a non-finite loss)
collective: when any rank reports one, every rank raises it (naming the rank), so all of them stop at the same
point and rank 0 saves the last good state. Anything else that kills a rank ends its process; gloo peers then
fail at their next collective, and torchrun stops the remaining workers of a failed group. The process group's
timeout (GRPOConfig.dist_timeout) bounds every wait, so no rank hangs forever.
"""

import contextlib
import datetime
import os

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if _active() else 1


def rank():
    return dist.get_rank() if _active() else 0


def is_main():
    """True on rank 0, the one rank that writes logs, samples and checkpoints (and on a single process)."""
    return rank() == 0


def setup(device="auto", timeout_s=600):
    """Join torchrun's process group, once per process, and return this rank's torch.device.

    device: "auto" (cuda if available, else cpu), "cpu", "cuda" or "cuda:N". With WORLD_SIZE > 1 in the
    environment, "auto" and "cuda" mean cuda:LOCAL_RANK; an explicit "cuda:N" is kept (for launchers that give
    each process its own CUDA_VISIBLE_DEVICES). The first call fixes the collective timeout, timeout_s seconds.
    """
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    name = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None and world > 1:
        dev = torch.device("cuda", local_rank)
    if world > 1 and not _active():
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"distributed.setup: WORLD_SIZE={world} but {key} is not set; launch with "
                                   f"torchrun --nproc_per_node {world} (it sets RANK, LOCAL_RANK, MASTER_ADDR, "
                                   f"MASTER_PORT)")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return dev


def shard(items):
    """(this rank's contiguous share of items, the index of its first item): rank r of W gets [r n/W, (r+1) n/W)."""
    n, w, r = len(items), world_size(), rank()
    if n % w:
        raise ValueError(f"distributed.shard: {n} items do not split evenly over {w} ranks")
    size = n // w
    return items[r * size:(r + 1) * size], r * size


def own_rows(x):
    """This rank's contiguous share of a tensor that holds every rank's rows in rank order (see `all_gather`)."""
    size = x.shape[0] // world_size()
    return x[rank() * size:(rank() + 1) * size]


def check_split(prompts_per_step, num_generations, gradient_accumulation_steps):
    """Raise a ValueError, before any compute, unless the P prompts of a step split evenly over the W ranks and each
    rank's P/W * G completions into gradient_accumulation_steps equal micro-batches."""
    w = world_size()
    if prompts_per_step % w:
        raise ValueError(f"GRPOTrainer: prompts_per_step = {prompts_per_step} (the global batch) does not split "
                         f"evenly over {w} ranks; choose a multiple of the world size")
    rows = prompts_per_step // w * num_generations
    if rows % gradient_accumulation_steps:
        raise ValueError(f"GRPOTrainer: each of the {w} ranks holds {prompts_per_step // w} prompts x "
                         f"{num_generations} completions = {rows} rows, which do not split into "
                         f"gradient_accumulation_steps = {gradient_accumulation_steps} equal micro-batches")


# ---- collectives (each one a no-op returning its input when the world size is 1) ---------------------------------

def all_sum(x):
    """Sum over ranks of x, a tensor (a new tensor, on x's device) or a number (a float)."""
    if not _active():
        return x
    if not isinstance(x, torch.Tensor):
        return float(all_sum(torch.tensor(float(x), dtype=torch.float64)))
    out = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(x.device)


def all_gather(x):
    """(W * n, ...) the ranks' (n, ...) tensors concatenated in rank order (every rank passes the same shape);
    for a dict of tensors, a dict of the gathered tensors."""
    if not _active():
        return x
    if isinstance(x, dict):
        return {k: all_gather(v) for k, v in x.items()}
    local = x.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(x.device)


def all_reduce_gradients(params):
    """Replace each parameter's .grad by the sum of its .grad over the ranks: one all_reduce of one flat buffer.

    Parameters without a gradient (None) are skipped; every rank runs the same graph, so they are the same ones.
    """
    if not _active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_comm_device())  # (sum of numels,)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(params):
    """Copy rank 0's values of params into every rank's (as DDP does when it wraps a model)."""
    if not _active():
        return
    with torch.no_grad():
        for p in params:
            buf = p.detach().to(_comm_device(), copy=True)
            dist.broadcast(buf, src=0)
            p.copy_(buf)


def broadcast_object(obj):
    """Rank 0's obj (any picklable value) on every rank; also a barrier: every rank waits for rank 0's."""
    if not _active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def gather_objects(objs):
    """The concatenation, in rank order, of every rank's list objs (picklable values), on every rank."""
    if not _active():
        return list(objs)
    parts = [None] * world_size()
    dist.all_gather_object(parts, list(objs))
    return [o for part in parts for o in part]


def raise_together(error):
    """Collective: when any rank passes an exception, every rank raises; when none does, return.

    The lowest failing rank's error is raised everywhere: itself on that rank, and on the others a copy of the same
    class built as cls(component, message) (RewardError and lifecycle.NonFinite are), its message prefixed
    with "rank r: ". One process: raise error if it is not None.
    """
    if not _active():
        if error is not None:
            raise error
        return
    flag = torch.tensor([0.0 if error is None else 1.0], device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() == 0:
        return
    report = None if error is None else (type(error), getattr(error, "component", None), str(error))
    reports = [None] * world_size()
    dist.all_gather_object(reports, report)
    first = next(r for r, rep in enumerate(reports) if rep is not None)
    if first == rank():
        raise error
    cls, component, message = reports[first]
    raise cls(component, f"rank {first}: {message}")


def barrier():
    if _active():
        dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first, the other ranks after it has finished: e.g. for writing a file once that
    every rank then reads."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def describe_failure(err, step):
    """One line for stderr naming the rank and the step that failed, so the failing rank stands out in the
    interleaved output of N processes."""
    return (f"minigrpo: rank {rank()} of {world_size()} failed at step {step}: {type(err).__name__}: {err}. "
            f"The other ranks stop at their next collective (or when torchrun ends them).")


def _active():
    return dist.is_available() and dist.is_initialized()


def _comm_device():
    """Where the backend wants its tensors: the current CUDA device for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
