"""Per-token estimators of KL(pi_theta || pi_ref) from the log-probs of sampled tokens.

The tokens y were sampled from pi_theta (or from the old policy, which equals it in value when mu = 1), so the
exact KL sum_v pi_theta(v) log(pi_theta(v) / pi_ref(v)) is estimated from the one token each position has.
With d = log pi_ref(y) - log pi_theta(y) (Schulman, "Approximating KL Divergence", 2020):

    k1 = -d               = logp - ref_logp                unbiased, high variance, can be negative
    k2 = d^2 / 2          = 0.5 (logp - ref_logp)^2        biased, low variance, >= 0
    k3 = exp(d) - d - 1                                     unbiased, low variance, >= 0

GRPO (DeepSeekMath eq. 4, TRL, this package's loss) uses k3. Its gradient w.r.t. logp is 1 - exp(d) =
1 - pi_ref / pi_theta. Nothing is clamped: if the policy drifts far below the reference on a token (d > ~88 in
float32) exp(d) overflows; verl clamps d to [-20, 20] for that reason, TRL does not, neither does this package.
"""

import torch

KINDS = ("k1", "k2", "k3")


def kl_estimate(logp, ref_logp, kind="k3"):
    """Per-token KL estimate, same shape as the inputs; gradient flows through both arguments.

    k1 = logp - ref_logp
    k2 = 0.5 * (logp - ref_logp)^2
    k3 = exp(d) - d - 1 with d = ref_logp - logp, computed as expm1(d) - d: the same number, but it keeps its
         precision when d is small and is never negative, where exp(d) - 1 - d can round to about -6e-8 in float32.

    Args:
        logp: (...) log-probs of the sampled tokens under the policy.
        ref_logp: (...) same shape, under the reference policy (normally no grad).
        kind: "k1" | "k2" | "k3".
    """
    if kind not in KINDS:
        raise ValueError(f"kl_estimate: kind must be one of {KINDS}, found {kind!r}")
    if not isinstance(logp, torch.Tensor) or not isinstance(ref_logp, torch.Tensor):
        raise TypeError(
            f"kl_estimate: logp and ref_logp must be tensors, found {type(logp).__name__} and "
            f"{type(ref_logp).__name__}"
        )
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"kl_estimate: logp and ref_logp must have the same shape, found {tuple(logp.shape)} and "
            f"{tuple(ref_logp.shape)}"
        )
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    d = ref_logp - logp
    return torch.expm1(d) - d
