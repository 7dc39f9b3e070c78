"""Group-relative advantages: how much better each completion did than its siblings.

GRPO samples G completions per prompt and scores each with one scalar reward. The advantage of completion i is
its reward measured against the other completions of the same prompt, so no value network is needed:

    A_i = (r_i - mean_g) / (max(std_g, std_floor) + eps)

mean_g and std_g are taken over the G rewards of i's group, std with Bessel's correction (divide by G - 1), and
eps is added to the std, not used as a floor: both as TRL's GRPOTrainer does. The same A_i is later broadcast to
every token of completion i.

The hazard of a continuous reward. A cosine-similarity reward is often tightly clustered inside a group: six
explanations scored 0.812, 0.815, 0.809, ... have std_g near 3e-3, and dividing by it turns differences the
encoder can barely tell apart into advantages of about +-1, exactly as large as the difference between a right
and a wrong answer. Three remedies, by increasing strength of opinion:
  - std_floor > 0: a group whose spread is below the floor is divided by the floor instead, so its advantages
    stay as small as its differences are (the floor is in reward units; e.g. 0.05 for a reward in [0, 1]);
  - scale="batch": divide by the std of the whole batch (mean still per group), so a quiet group stays quiet;
  - scale="none": only centre, A_i = r_i - mean_g (Dr. GRPO).

Rewards are prompt-major: rows [p0 c0, p0 c1, ..., p0 c(G-1), p1 c0, ...], as `repeat_prompts` lays them out.
"""

import torch

SCALES = ("group", "batch", "none")


def group_advantages(rewards, group_size, scale="group", eps=1e-4, std_floor=0.0):
    """Advantages of B groups of G completions, and statistics of the rewards.

    Formula (Bessel-corrected std, eps added to the std):
        centred_i = r_i - mean_g
        scale="group":  A_i = centred_i / (max(std_g, std_floor) + eps)
        scale="batch":  A_i = centred_i / (max(std_B, std_floor) + eps),  std_B over all B*G rewards
        scale="none":   A_i = centred_i                                    (eps and std_floor unused)

    Two cases are fixed by convention rather than by the formula:
      - a group whose rewards are all equal has advantages exactly 0 (not a rounding residue of r - mean);
      - a group of one (group_size=1) has advantage 0: the std of one sample is undefined (Bessel divides by
        G - 1 = 0) and a completion compared with nobody carries no relative signal.

    Args:
        rewards: (B*G,) float tensor, prompt-major. Must be finite.
        group_size: G, completions per prompt; must divide len(rewards).
        scale: "group" | "batch" | "none".
        eps: added to the std before dividing (TRL uses 1e-4).
        std_floor: lower bound on the std before eps is added; 0.0 reproduces TRL.

    Returns:
        advantages: (B*G,) in the rewards' dtype, float32 for integer or half-precision rewards.
        stats: dict of python floats:
            reward_mean     mean of all rewards
            reward_std      Bessel std of all rewards (0 for a single reward), as TRL logs `reward_std`
            group_std_mean  mean over groups of std_g (0 for groups of one): the spread the advantages divide by
            frac_zero_std   fraction of groups with std_g close to 0 (torch.isclose defaults, as TRL's
                            `frac_reward_zero_std`); groups of one count as zero-std. Always measured per group,
                            also with scale="batch" (where TRL tests the batch std instead).
            frac_std_floored  fraction of groups whose advantages were divided by std_floor instead of the std
                            they would otherwise divide by: with scale="group" the groups with std_g < std_floor;
                            with scale="batch" every group or none (1 when std_B < std_floor, else 0); with
                            scale="none" 0 (nothing is divided). 0 when std_floor is 0.
    """
    rewards = _check_rewards(rewards, group_size, scale, eps, std_floor)
    n = rewards.numel()
    grouped = rewards.view(n // group_size, group_size)  # (B, G)

    mean_g = grouped.mean(dim=1, keepdim=True)  # (B, 1)
    if group_size > 1:
        std_g = grouped.std(dim=1, correction=1, keepdim=True)  # (B, 1), Bessel
    else:
        std_g = torch.zeros_like(mean_g)  # undefined for one sample; 0 marks "no spread"
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # (B, 1); true for G = 1

    # r - mean can leave a rounding residue (e.g. 6 x 0.1 summed and divided by 6); force constant groups to 0.
    centred = torch.where(constant, torch.zeros_like(grouped), grouped - mean_g)  # (B, G)

    if scale == "group":
        std = std_g
    elif scale == "batch":
        std = rewards.std(correction=1) if n > 1 else rewards.new_zeros(())
    else:
        std = None
    if std is None:
        advantages = centred
    else:
        advantages = centred / (torch.clamp(std, min=std_floor) + eps)

    stats = {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(correction=1).item() if n > 1 else 0.0,
        "group_std_mean": std_g.mean().item(),
        "frac_zero_std": torch.isclose(std_g, torch.zeros_like(std_g)).float().mean().item(),
        "frac_std_floored": 0.0 if std is None else (std < std_floor).expand_as(std_g).float().mean().item(),
    }
    return advantages.reshape(n), stats


def _check_rewards(rewards, group_size, scale, eps, std_floor):
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"group_advantages: rewards must be a torch.Tensor, found {type(rewards).__name__}")
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages: rewards must be 1-D (B*G,), found shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_advantages: group_size must be an int >= 1, found {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_advantages: {rewards.numel()} rewards do not split into groups of {group_size}: "
            f"expected a positive multiple of group_size (B prompts x G completions, prompt-major)"
        )
    if scale not in SCALES:
        raise ValueError(f"group_advantages: scale must be one of {SCALES}, found {scale!r}")
    if eps < 0 or std_floor < 0:
        raise ValueError(f"group_advantages: eps and std_floor must be >= 0, found eps={eps}, std_floor={std_floor}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    elif rewards.dtype in (torch.float16, torch.bfloat16):
        rewards = rewards.float()  # a half-precision std loses the small spreads that matter here
    bad = (~torch.isfinite(rewards)).nonzero().flatten()
    if bad.numel() > 0:
        raise ValueError(
            f"group_advantages: rewards must be finite, found {rewards[bad[0]].item()} at index {bad[0].item()} "
            f"({bad.numel()} non-finite in total)"
        )
    return rewards
