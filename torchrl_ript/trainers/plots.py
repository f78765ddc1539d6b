"""A success-rate-vs-iteration plot people can read."""
from __future__ import annotations

from pathlib import Path

__all__ = ["plot_success_rate"]


def plot_success_rate(
    eval_history: list[dict],
    train_history: list[dict],
    path: str | Path,
    *,
    title: str = "RIPT success rate",
    baseline: float | None = None,
) -> Path:
    """Held-out SR (deterministic) and rollout SR (sampling) per RIPT step.

    ``eval_history`` holds ``{"step", "success_rate", "sr/<task>"...}`` records
    (``RIPTTrainer.eval_history``), ``train_history`` the per-step records
    with ``collect/success_rate``. ``baseline`` draws the SFT level.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    if eval_history:
        steps = [e["step"] for e in eval_history]
        ax.plot(steps, [100 * e["success_rate"] for e in eval_history], "o-", lw=2,
                label="held-out SR (deterministic)")
        tasks = sorted({k for e in eval_history for k in e if k.startswith("sr/")})
        if 1 < len(tasks) <= 10:
            for task in tasks:
                ax.plot(steps, [100 * e.get(task, float("nan")) for e in eval_history],
                        lw=0.8, alpha=0.6, label=task[3:])
    if train_history:
        ax.plot([r["step"] for r in train_history],
                [100 * r.get("collect/success_rate", float("nan")) for r in train_history],
                "s--", color="gray", label="rollout SR (sampling)")
    if baseline is not None:
        ax.axhline(100 * baseline, color="k", ls=":", label="SFT")
    ax.set_xlabel("RIPT iteration")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
