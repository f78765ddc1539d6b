"""Paired significance tests for success rates measured on the same contexts.

RIPT is evaluated before and after training on the *same* held-out contexts,
so the two success rates are paired: a context solved both times says nothing
about the change. The exact McNemar test looks only at the discordant
contexts (solved after but not before, and the reverse); under "no change"
each discordant context is equally likely to go either way.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["paired_success_test"]


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
