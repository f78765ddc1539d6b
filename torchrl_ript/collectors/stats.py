"""What one collection iteration did: ``GroupCollector.last_stats``."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CollectionStats"]


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

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["success_rate"] = self.success_rate
        out["policy_share"] = self.policy_share
        out["informative_group_rate"] = self.informative_group_rate
        out["env_steps_per_s"] = self.env_steps / max(self.wall_s, 1e-9)
        out["env_steps_per_kept_rollout"] = self.env_steps / max(self.rollouts_kept, 1)
        return out
