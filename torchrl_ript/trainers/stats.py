"""Paired significance tests for success rates measured on the same contexts.

RIPT is evaluated before and after training on the *same* held-out contexts,
so the two success rates are paired: a context solved both times says nothing
about the change. The exact McNemar test looks only at the discordant
contexts (solved after but not before, and the reverse); under "no change"
each discordant context is equally likely to go either way.

With several rollouts per context (:func:`per_start_success`), each context
has a success *count*; :func:`paired_count_test` is the same sign test on the
per-context count differences (with one rollout each it is McNemar's).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["paired_success_test", "per_start_success", "paired_count_test"]


def paired_success_test(before: Sequence[bool], after: Sequence[bool]) -> dict:
    """One-sided exact McNemar (sign) test that ``after`` succeeds more often than ``before``.

    Args:
        before: per-context outcomes of the baseline (e.g. SFT), in context order.
        after: the outcomes of the same contexts after training.

    Returns:
        ``{"n": contexts, "sr_before", "sr_after", "gained": solved only after,
        "lost": solved only before, "p_value": P(X >= gained) for
        X ~ Binomial(gained + lost, 1/2)}`` (1.0 when nothing changed).

    Examples:
        >>> out = paired_success_test([0] * 10 + [1] * 10, [1] * 8 + [0] * 2 + [1] * 10)
        >>> out["gained"], out["lost"], round(out["p_value"], 4)
        (8, 0, 0.0039)
        >>> paired_success_test([1, 0], [0, 1])["p_value"]
        0.75
    """
    before = [bool(x) for x in before]
    after = [bool(x) for x in after]
    if len(before) != len(after):
        raise ValueError(
            f"paired outcomes must cover the same contexts: got {len(before)} before and "
            f"{len(after)} after (evaluate both on the same context set)."
        )
    if not before:
        raise ValueError("no outcomes to compare: evaluate at least one context.")
    gained = sum(1 for b, a in zip(before, after) if a and not b)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    n = gained + lost
    p_value = sum(math.comb(n, k) for k in range(gained, n + 1)) / 2**n if n else 1.0
    return {
        "n": len(before),
        "sr_before": sum(before) / len(before),
        "sr_after": sum(after) / len(after),
        "gained": gained,
        "lost": lost,
        "p_value": p_value,
    }


def per_start_success(outcomes: Sequence[bool], rollouts: int) -> dict:
    """Success counts per start from ``rollouts`` rollouts of each start.

    ``outcomes`` holds the rollouts start by start (``rollouts`` consecutive
    entries per start). A start no rollout solved gives RIPT only all-failure
    groups there: the policy has to learn it from its neighbours, which is
    why the share of starts ``solved_at_least_once`` bounds what sharpening the
    sampling policy can reach on these starts (for ``rollouts`` = the group
    size K, ``mixed`` is the share of starts whose K-group was informative).

    Returns:
        ``{"n_starts", "rollouts", "sr": mean over all rollouts, "counts":
        successes per start, "never": share of starts with 0 successes,
        "always": share with ``rollouts``, "mixed": the rest,
        "solved_at_least_once": 1 - never}``.

    Examples:
        >>> out = per_start_success([0, 0, 0, 1, 0, 1, 1, 1, 1], rollouts=3)
        >>> out["counts"], out["never"], out["mixed"], out["always"], out["sr"]
        ([0, 2, 3], 0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.5555555555555556)
    """
    outcomes = [bool(x) for x in outcomes]
    if rollouts < 1:
        raise ValueError(f"rollouts per start must be >= 1, got {rollouts}.")
    if not outcomes or len(outcomes) % rollouts:
        raise ValueError(
            f"{len(outcomes)} outcomes are not {rollouts} rollouts for each of a whole number of starts "
            "(pass the outcomes start by start, every start rolled out the same number of times)."
        )
    counts = [sum(outcomes[i:i + rollouts]) for i in range(0, len(outcomes), rollouts)]
    n = len(counts)
    never = sum(c == 0 for c in counts) / n
    always = sum(c == rollouts for c in counts) / n
    return {
        "n_starts": n,
        "rollouts": rollouts,
        "sr": sum(counts) / (n * rollouts),
        "counts": counts,
        "never": never,
        "always": always,
        "mixed": sum(0 < c < rollouts for c in counts) / n,
        "solved_at_least_once": 1.0 - never,
    }


def paired_count_test(before: Sequence[int], after: Sequence[int], *, rollouts: int) -> dict:
    """One-sided exact sign-flip test that ``after`` solves its starts more often than ``before``.

    ``before`` / ``after``: successes per start out of ``rollouts`` rollouts
    each, the same starts in the same order (:func:`per_start_success`'s
    ``counts``). Under "no change" each start's difference ``d = after -
    before`` is as likely to be ``+|d|`` as ``-|d|``; the p-value is the exact
    probability, over all sign flips, of a total difference at least the one
    observed. With ``rollouts=1`` it is :func:`paired_success_test`'s McNemar.

    Returns:
        ``{"n": starts, "rollouts", "sr_before", "sr_after", "starts_up",
        "starts_down": starts whose count rose / fell, "p_value"}``.

    Examples:
        >>> out = paired_count_test([0, 1, 2, 4], [2, 3, 2, 3], rollouts=4)
        >>> out["starts_up"], out["starts_down"], out["p_value"]
        (2, 1, 0.25)
        >>> paired_count_test([0, 0, 1], [1, 1, 0], rollouts=1)["p_value"] == paired_success_test(
        ...     [0, 0, 1], [1, 1, 0])["p_value"]
        True
    """
    before, after = [int(c) for c in before], [int(c) for c in after]
    if len(before) != len(after):
        raise ValueError(
            f"paired counts must cover the same starts: got {len(before)} before and {len(after)} after "
            "(evaluate both policies on the same starts with the same rollouts per start)."
        )
    if not before:
        raise ValueError("no starts to compare: evaluate at least one start.")
    if any(not 0 <= c <= rollouts for c in before + after):
        raise ValueError(f"success counts must lie in [0, {rollouts}] (rollouts per start).")
    diffs = [a - b for b, a in zip(before, after)]
    observed = sum(diffs)
    # exact null distribution of sum(+-|d|): counts of sign patterns per total, by dynamic programming
    ways = {0: 1}
    for d in (abs(d) for d in diffs if d):
        step: dict[int, int] = {}
        for total, count in ways.items():
            for signed in (d, -d):
                step[total + signed] = step.get(total + signed, 0) + count
        ways = step
    patterns = sum(ways.values())
    p_value = sum(count for total, count in ways.items() if total >= observed) / patterns
    n = len(before)
    return {
        "n": n,
        "rollouts": rollouts,
        "sr_before": sum(before) / (n * rollouts),
        "sr_after": sum(after) / (n * rollouts),
        "starts_up": sum(d > 0 for d in diffs),
        "starts_down": sum(d < 0 for d in diffs),
        "p_value": p_value,
    }
