"""Which training items a GRPO step draws its prompts from: epochs of seeded permutations, read in order.

Step s (1-based) takes positions (s - 1) * P .. s * P - 1 of the concatenation perm_0 + perm_1 + ..., where
perm_e is a permutation of the N item indices drawn from a generator seeded with (seed, e). Each epoch visits
every item once, a step may straddle two epochs, and the items of any step are a pure function of (seed, step):
resuming needs no sampler state, and the order does not depend on how the run was interrupted.
"""

import torch


class PromptSampler:
    """items_for_step(step) -> the P = prompts_per_step items of that step (see the module docstring)."""

    def __init__(self, items, prompts_per_step, seed):
        self.items, self.prompts_per_step, self.seed = list(items), prompts_per_step, seed
        self._perm = None  # (epoch, permutation of item indices), the one used last

    def items_for_step(self, step):
        n, P = len(self.items), self.prompts_per_step
        out = []
        for g in range((step - 1) * P, step * P):
            epoch, pos = divmod(g, n)
            out.append(self.items[self._permutation(epoch)[pos]])
        return out

    def _permutation(self, epoch):
        if self._perm is None or self._perm[0] != epoch:
            seeded = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.items), generator=seeded).tolist())
        return self._perm[1]
