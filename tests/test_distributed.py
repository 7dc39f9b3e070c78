"""Data-parallel GRPO (grpo/distributed.py) on CPU: 2 gloo processes under torchrun run the same GRPO as 1 process.

tests/distributed_worker.py holds the scenarios (a tiny random Llama, 4 prompts x 3 completions per step, 3
micro-batches per rank, a noise reward and a SemanticReward with the off-target baseline). Each runs once here, in
one process, and once in each of the 2 processes that `torchrun --standalone --nproc_per_node 2` starts; the
test compares what they logged and trained. A timeout turns a hang into a failure.
"""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigrpo.grpo import distributed
from minigrpo.grpo.metrics import TIMING_KEYS
from minigrpo.miniature import make_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKER_PATH = Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 900  # seconds for all the runs; a few tens on a quiet 2-core machine


def load_worker():
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()
LOSS_SCENARIOS = list(worker.SCENARIOS)  # grpo, bnpo, dr_grpo, dapo, and bnpo with scale_rewards="batch", mu = 2


def torchrun(tiny, out, *names):
    """Start the worker under torchrun with 2 processes, in its own process group (so a hang can be killed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    log = open(Path(out) / "torchrun.log", "w")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER_PATH),
           str(tiny), str(out), *names]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True), log


def finish(proc, log):
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"torchrun did not finish within {TIMEOUT} s: a rank hangs; log in {log.name}")
    finally:
        log.close()
    return proc.returncode, Path(log.name).read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one": {scenario: result}, "two": {scenario: [rank 0's, rank 1's]}, "crash" and "stall": (returncode, log)}."""
    root = tmp_path_factory.mktemp("ddp")
    tiny = make_tiny_checkpoint(root / "tiny", arch="llama", seed=0)
    names = LOSS_SCENARIOS + ["resume", "stop"]
    (root / "two").mkdir()
    (root / "crash").mkdir()
    (root / "stall").mkdir()
    main_run = torchrun(tiny, root / "two", *names)
    crash_run = torchrun(tiny, root / "crash", "crash")
    stall_run = torchrun(tiny, root / "stall", "stall")
    one = {name: worker.run(name, tiny, root / "one") for name in names}  # meanwhile, the 1-process reference
    code, log = finish(*main_run)
    assert code == 0, log[-3000:]
    two = {name: [torch.load(root / "two" / name / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
           for name in names}
    return {"one": one, "two": two, "crash": finish(*crash_run), "stall": finish(*stall_run)}


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_close(a, b, where):
    """Floats within rel 1e-4 (abs 1e-6), anything else equal; through the per-update dicts of mu > 1."""
    if isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), where
    elif isinstance(a, (list, dict)):
        assert type(a) is type(b) and len(a) == len(b), where
        for k in (a if isinstance(a, dict) else range(len(a))):
            assert_close(a[k], b[k], (*where, k))
    else:
        assert a == b, where


def assert_same_run(one, two, name):
    """Per-step rewards within 1e-5, every other logged number within rel 1e-4, the adapter within 1e-4."""
    assert [r["step"] for r in one["rows"]] == [r["step"] for r in two["rows"]]
    reward_diff = 0.0
    for r1, r2 in zip(strip(one["rows"]), strip(two["rows"])):
        assert (r1.pop("world_size"), r2.pop("world_size")) == (1, 2)
        assert r1.keys() == r2.keys()
        for key, v in r1.items():
            if key == "reward" or key.startswith("rewards/"):
                reward_diff = max(reward_diff, abs(v - r2[key]))
            else:
                assert_close(v, r2[key], (name, r1["step"], key))
    adapter_diff = max_diff(one["adapter"], two["adapter"])
    print(f"\n{name}: 2 processes vs 1, max |reward diff| {reward_diff:.1e}, max |adapter diff| {adapter_diff:.1e}")
    assert reward_diff < 1e-5 and adapter_diff < 1e-4
    state1, state2 = one["reward_state"], two["reward_state"]  # the semantic reward's running off-target mean
    assert state2["off_target_calls"] == state1["off_target_calls"] > 0
    assert state2["off_target_sum"] == pytest.approx(state1["off_target_sum"], abs=1e-6)


@pytest.mark.parametrize("name", LOSS_SCENARIOS)
def test_two_processes_log_the_rewards_and_train_the_adapter_of_one(runs, name):
    assert_same_run(runs["one"][name], runs["two"][name][0], name)


@pytest.mark.parametrize("name", LOSS_SCENARIOS + ["resume", "stop"])
def test_both_ranks_hold_the_same_adapter_and_return_the_same_rows(runs, name):
    rank0, rank1 = runs["two"][name]
    assert all(torch.equal(a, b) for a, b in zip(rank0["adapter"], rank1["adapter"]))
    assert rank0["reward_state"] == rank1["reward_state"]
    if name in LOSS_SCENARIOS:
        assert strip(rank0["rows"]) == strip(rank1["rows"])


def test_resume_under_two_processes_reproduces_the_uninterrupted_run(runs):
    resumed = runs["two"]["resume"][0]
    straight = resumed["straight"]
    assert resumed["logged_before"] == [1, 2, 3]  # step 3 was logged, its checkpoint never written
    assert strip(resumed["rows"]) == strip(straight["rows"])  # metrics.jsonl as if the run had never stopped
    assert all(torch.equal(a, b) for a, b in zip(resumed["adapter"], straight["adapter"]))
    assert resumed["reward_state"] == straight["reward_state"]
    assert_same_run(runs["one"]["resume"]["straight"], straight, "resume")


def test_a_reward_failing_on_one_rank_stops_every_rank_at_the_same_step(runs):
    # step 2's last prompt lives on rank 1, and its completions score NaN there
    one, (rank0, rank1) = runs["one"]["stop"], runs["two"]["stop"]
    for stopped in (one["stopped"], rank0["stopped"], rank1["stopped"]):
        step, component, message, checkpoint = stopped
        assert (step, component, checkpoint) == (2, "noise", "step-000001")
    assert "step 2: noise: rank 1: reward 'noise' returned non-finite values" in rank0["stopped"][2]
    assert "step 2: noise: reward 'noise' returned non-finite values" in rank1["stopped"][2]
    assert [r["step"] for r in rank0["rows"]] == [1]
    assert max_diff(one["adapter"], rank0["adapter"]) < 1e-4  # the state after step 1, as one process has it


def test_a_rank_that_dies_ends_every_process_with_a_message_naming_it(runs):
    code, log = runs["crash"]
    assert code != 0
    assert "minigrpo: rank 1 of 2 failed at step 2: Crash: rank 1 dies" in log


def test_a_rank_that_stalls_ends_the_run_after_the_collective_timeout(runs):
    # rank 1 sleeps 600 s inside step 2's reward; with dist_timeout = 10 s rank 0 gives up waiting for it, and its
    # failure ends rank 1 too. Without the timeout rank 0 would wait the 600 s and the run would then succeed.
    code, log = runs["stall"]
    assert code != 0
    assert "minigrpo: rank 0 of 2 failed at step 2" in log and "Timed out" in log


# ---- one process: every helper is the identity, and the split is checked before any compute ----

def test_one_process_helpers_return_their_input():
    x = torch.arange(6.0)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.all_gather(x) is x and distributed.all_sum(x) is x and torch.equal(distributed.own_rows(x), x)
    assert distributed.shard(["a", "b", "c"]) == (["a", "b", "c"], 0)
    assert distributed.broadcast_object({"k": 1}) == {"k": 1} and distributed.gather_objects([1, 2]) == [1, 2]
    distributed.raise_together(None)
    with pytest.raises(KeyError):
        distributed.raise_together(KeyError("x"))


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(ValueError, match="prompts_per_step = 6 .* does not split evenly over 4 ranks"):
        distributed.check_split(6, 3, 1)
    with pytest.raises(ValueError, match="each of the 4 ranks holds 2 prompts x 3 completions = 6 rows, which do "
                                         "not split into gradient_accumulation_steps = 4"):
        distributed.check_split(8, 3, 4)
    distributed.check_split(8, 3, 3)
