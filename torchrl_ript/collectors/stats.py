"""What one collection iteration did: ``GroupCollector.last_stats``."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CollectionStats"]

_TASK_COUNTS = ("groups", "informative", "kept", "rollouts", "successes")  # per-task sums (CollectionStats.per_task)


@dataclass
class CollectionStats:
    """Counts and times of one batch of :class:`~torchrl_ript.GroupCollector`.

    Groups are judged in draw order once all their K rollouts are in, so
    ``groups_completed = groups_kept + groups_all_success + groups_all_failure``
    with dynamic sampling on (with it off, uniform groups are kept and counted
    both in ``groups_kept`` and in the uniform counts).
    """

    contexts_drawn: int = 0  # new contexts drawn for this batch
    groups_completed: int = 0
    groups_kept: int = 0
    groups_all_success: int = 0
    groups_all_failure: int = 0
    rollouts_finished: int = 0
    rollouts_kept: int = 0
    rollouts_discarded: int = 0  # simulated but not used: in flight or past B at the stop, or too stale
    rollouts_carried: int = 0  # kept for the next batch (keep_in_flight=True)
    rollouts_lost: int = 0  # in flight when an env worker died (their groups are rerun)
    env_restarts: int = 0
    max_staleness: int = 0  # policy versions between the oldest kept rollout's start and this batch
    successes: int = 0
    decision_steps: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    policy_s: float = 0.0
    env_wait_s: float = 0.0  # blocked waiting for env results (workers simulating and rendering)
    bookkeeping_s: float = 0.0  # sending steps, recording decisions, finished rollouts, buffer writes
    reset_s: float = 0.0  # context resets of freed env slots
    hit_draw_limit: bool = False
    # task id -> {"groups": completed, "informative": mixed outcomes, "kept": rollouts in the batch,
    #             "rollouts" / "successes": of the completed groups}
    per_task: dict = field(default_factory=dict)

    def count_group(self, task_id: int, *, informative: bool, kept: int, rollouts: int = 0,
                    successes: int = 0) -> None:
        """Count one completed group of ``task_id`` (``kept``: its rollouts written to the batch;
        ``rollouts`` / ``successes``: its size and successes, for the task's success rate)."""
        self.add_task_counts(task_id, {"groups": 1, "informative": int(informative), "kept": int(kept),
                                       "rollouts": int(rollouts), "successes": int(successes)})

    def add_task_counts(self, task_id: int, counts: dict) -> None:
        """Add ``counts`` (``groups``, ``informative``, ``kept``, ``rollouts``, ``successes``;
        a missing one counts 0, other keys, e.g. the rates of :meth:`task_mix`, are ignored)
        to ``task_id``'s."""
        total = self.per_task.setdefault(int(task_id), dict.fromkeys(_TASK_COUNTS, 0))
        for name in _TASK_COUNTS:
            total[name] += int(counts.get(name, 0))

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.rollouts_finished, 1)

    @property
    def informative_group_rate(self) -> float:
        """Share of the completed groups with mixed outcomes."""
        uniform = self.groups_all_success + self.groups_all_failure
        return (self.groups_completed - uniform) / max(self.groups_completed, 1)

    @property
    def policy_share(self) -> float:
        """Share of the batch's wall time spent in policy calls."""
        return self.policy_s / self.wall_s if self.wall_s > 0 else 0.0

    def task_mix(self) -> dict:
        """Per task: its counts, ``informative_rate`` (mixed-outcome share of its
        completed groups), ``batch_share`` (its share of the kept rollouts) and
        ``success_rate`` (of its completed groups' rollouts; ``None`` if none were counted).

        Examples:
            >>> stats = CollectionStats()
            >>> stats.count_group(0, informative=True, kept=8, rollouts=8, successes=3)
            >>> stats.count_group(0, informative=False, kept=0, rollouts=8, successes=8)
            >>> stats.count_group(1, informative=True, kept=8, rollouts=8, successes=1)
            >>> mix = stats.task_mix()[0]
            >>> mix["groups"], mix["informative"], mix["kept"], mix["rollouts"], mix["successes"]
            (2, 1, 8, 16, 11)
            >>> mix["informative_rate"], mix["batch_share"], mix["success_rate"]
            (0.5, 0.5, 0.6875)
        """
        total_kept = sum(c["kept"] for c in self.per_task.values())
        return {
            task: {**counts, "informative_rate": counts["informative"] / max(counts["groups"], 1),
                   "batch_share": counts["kept"] / total_kept if total_kept else 0.0,
                   "success_rate": counts["successes"] / counts["rollouts"] if counts["rollouts"] else None}
            for task, counts in sorted(self.per_task.items())
        }

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["per_task"] = self.task_mix()
        out["success_rate"] = self.success_rate
        out["policy_share"] = self.policy_share
        out["informative_group_rate"] = self.informative_group_rate
        out["env_steps_per_s"] = self.env_steps / max(self.wall_s, 1e-9)
        out["env_steps_per_kept_rollout"] = self.env_steps / max(self.rollouts_kept, 1)
        return out
