"""A success-rate-vs-iteration plot people can read."""
from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no GUI backend or global state involved

__all__ = ["plot_success_rate"]


def plot_success_rate(
    eval_history: list[dict],
    train_history: list[dict],
    path: str | Path,
    *,
    title: str = "RIPT success rate",
    baseline: float | Mapping[str, float] | None = None,
    eval_label: str = "held-out SR (deterministic)",
    final: Mapping[str, float] | None = None,
) -> Path:
    """Held-out SR and rollout SR (sampling) per RIPT step.

    ``eval_history`` holds ``{"step", "success_rate", "sr/<task>"...}`` records
    (``RIPTTrainer.eval_history``), labelled ``eval_label``; ``train_history``
    the per-step records with ``collect/success_rate``. ``baseline`` draws the
    SFT level (a mapping: one labelled line each); ``final`` maps labels to the SRs of a final (larger)
    evaluation, drawn as stars after the last step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8.4, 4.0), dpi=120)
    ax = fig.subplots()
    if eval_history:
        steps = [e["step"] for e in eval_history]
        ax.plot(steps, [100 * e["success_rate"] for e in eval_history], "o-", lw=2,
                label=eval_label)
        tasks = sorted({k for e in eval_history for k in e if k.startswith("sr/")})
        if 1 < len(tasks) <= 10:
            for task in tasks:
                ax.plot(steps, [100 * e.get(task, float("nan")) for e in eval_history],
                        lw=0.8, alpha=0.6, label=task[3:])
    if train_history:
        ax.plot([r["step"] for r in train_history],
                [100 * r.get("collect/success_rate", float("nan")) for r in train_history],
                "s--", color="gray", label="rollout SR (sampling)")
    if final:
        last = max([e["step"] for e in eval_history] + [r["step"] for r in train_history] + [0])
        for marker, (label, rate) in zip("*PXD", final.items()):
            ax.plot([last + 0.3], [100 * rate], marker, ms=11, ls="none", label=f"final: {label}")
    if baseline is not None:
        lines = baseline.items() if isinstance(baseline, Mapping) else [(None, baseline)]
        for (label, rate), style in zip(lines, (":", "-.", "--")):
            ax.axhline(100 * rate, color="k", ls=style, lw=1, label="SFT" if label is None else f"SFT: {label}")
    ax.set_xlabel("RIPT iteration")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never hides data
    fig.tight_layout()
    fig.savefig(path)
    return path
