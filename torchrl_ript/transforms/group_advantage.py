"""Leave-one-out advantages and dynamic rejection as replay-buffer transforms.

Both work on write (``ReplayBuffer.extend`` calls their ``inv``), on
trajectory rows (``batch_size [N]``, one row per rollout, the trajectory
reward under ``reward_key``), and hold partial groups until all K members
have arrived, like TorchRL's :class:`~torchrl.objectives.llm.MCAdvantage`.

Order does not matter. TorchRL runs write-side transforms in *reverse*
append order, so a filter appended after the advantage runs first and sees
no advantage yet. The filter then judges groups by their rewards (a group's
leave-one-out advantages are all zero exactly when its rewards are all
equal), queueing partial groups the same way; the advantage transform then
receives only complete, informative groups. Either order writes the same rows.

Why not TorchRL's :class:`~torchrl.objectives.llm.MCAdvantage`, which queues
groups the same way: it writes group-*normalised* advantages
(``(R_i - mean) / std``, GRPO) on per-step rows, while RIPT's Eq. 5 is the
unnormalised leave-one-out ``R_k - mean_{j != k} R_j`` on trajectory rows,
and its dynamic sampling must report which groups it dropped and why.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
from tensordict import TensorDictBase, lazy_stack
from tensordict.utils import NestedKey
from torchrl.envs.transforms import Compose, Transform

from torchrl_ript.config import check_group_sizes

__all__ = ["RLOOAdvantage", "ZeroAdvantageFilter"]


class _GroupQueue:
    """Collects trajectory rows by group id and releases complete groups."""

    def __init__(self, group_key: NestedKey) -> None:
        self.group_key = group_key
        self.pending: OrderedDict[int, list[TensorDictBase]] = OrderedDict()
        self.completed: set[int] = set()  # ids are single-use: a late extra member is a bug

    def push(self, tensordict: TensorDictBase, group_size: int) -> list[TensorDictBase]:
        """Queue the rows of ``tensordict``; return each group that is now complete."""
        if tensordict.batch_dims != 1:
            raise ValueError(
                f"expected trajectory rows (batch_size [N]), got batch_size "
                f"{tuple(tensordict.batch_size)}: write one row per rollout."
            )
        ids = tensordict.get(self.group_key, None)
        if ids is None:
            raise KeyError(
                f"no {self.group_key!r} entry: each trajectory needs the id of its "
                "group (GroupCollector writes it; set group_key= otherwise)."
            )
        ids = ids.reshape(tensordict.shape[0], -1)[:, 0].tolist()
        complete = []
        for row, group in enumerate(ids):
            if group in self.completed:
                raise ValueError(
                    f"group {group} received more than group_size={group_size} "
                    "trajectories: group ids must be unique per K rollouts."
                )
            members = self.pending.setdefault(int(group), [])
            members.append(tensordict[row])
            if len(members) > group_size:
                raise ValueError(
                    f"group {group} received more than group_size={group_size} "
                    "trajectories: group ids must be unique per K rollouts."
                )
            if len(members) == group_size:
                complete.append(torch.stack(self.pending.pop(int(group))))
                self.completed.add(int(group))
        return complete

    def __len__(self) -> int:
        return sum(len(members) for members in self.pending.values())

    def clear(self) -> None:
        self.pending.clear()


def _trajectory_rewards(group: TensorDictBase, reward_key: NestedKey) -> torch.Tensor:
    reward = group.get(reward_key, None)
    if reward is None:
        raise KeyError(f"no trajectory reward under {reward_key!r}: set reward_key=.")
    if reward.numel() != group.shape[0]:
        raise ValueError(
            f"{reward_key!r} must hold one reward per trajectory ([N] or [N, 1]), "
            f"got shape {tuple(reward.shape)} for {group.shape[0]} trajectories."
        )
    return reward.reshape(-1).to(torch.float32)


def _cat(groups: list[TensorDictBase]) -> TensorDictBase | None:
    if not groups:
        return None  # a replay buffer writes nothing for None (an empty td raises)
    return torch.cat(groups, 0) if len(groups) > 1 else groups[0]


class RLOOAdvantage(Transform):
    """Leave-one-out advantage ``A_k = R_k - (sum_j R_j - R_k) / (K - 1)``.

    One value per trajectory, written as ``[N, 1]`` (the shape
    :class:`~torchrl.objectives.ClipPPOLoss` expects). A group is scored once
    all its K trajectories have arrived; partial groups wait across writes.

    Args:
        group_size (int): K, the rollouts per context. Must be >= 2.

    Keyword Args:
        group_key (NestedKey): the group id entry. Defaults to ``"group_id"``.
        reward_key (NestedKey): the trajectory reward. Defaults to ``"reward"``.
        advantage_key (NestedKey): where to write. Defaults to ``"advantage"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> rloo = RLOOAdvantage(4)
        >>> td = TensorDict(group_id=torch.zeros(4, dtype=torch.long),
        ...                 reward=torch.tensor([1.0, 0, 0, 0]), batch_size=[4])
        >>> rloo.inv(td)["advantage"].squeeze(-1)
        tensor([ 1.0000, -0.3333, -0.3333, -0.3333])
        >>> # on a replay buffer, with the zero-advantage filter (either order)
        >>> from torchrl.data import LazyTensorStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=LazyTensorStorage(16))
        >>> rb = rb.append_transform(RLOOAdvantage(2))
        >>> rb = rb.append_transform(ZeroAdvantageFilter())
        >>> _ = rb.extend(TensorDict(group_id=torch.tensor([0, 0, 1, 1]),
        ...                          reward=torch.tensor([1.0, 1, 1, 0]), batch_size=[4]))
        >>> len(rb)  # group 0 (all successes) was dropped
        2
    """

    def __init__(
        self,
        group_size: int,
        *,
        group_key: NestedKey = "group_id",
        reward_key: NestedKey = "reward",
        advantage_key: NestedKey = "advantage",
    ) -> None:
        check_group_sizes(group_size)
        super().__init__(in_keys=[], out_keys=[])
        self.group_size = int(group_size)
        self.group_key = group_key
        self.reward_key = reward_key
        self.advantage_key = advantage_key
        self._queue = _GroupQueue(group_key)

    @property
    def num_pending(self) -> int:
        """Trajectories waiting for the rest of their group."""
        return len(self._queue)

    def clear_pending(self) -> None:
        self._queue.clear()

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """Leave-one-out advantages of ``[..., K]`` rewards."""
        k = rewards.shape[-1]
        baseline = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
        return rewards - baseline

    def _inv_call(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        if tensordict is None or tensordict.numel() == 0:
            return None
        scored = []
        for group in self._queue.push(tensordict, self.group_size):
            rewards = _trajectory_rewards(group, self.reward_key)
            group.set(self.advantage_key, self.advantages(rewards).unsqueeze(-1))
            scored.append(group)
        return _cat(scored)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict  # nothing to do when sampling

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(group_size={self.group_size}, "
            f"group_key={self.group_key!r}, reward_key={self.reward_key!r})"
        )


class ZeroAdvantageFilter(Transform):
    """Dynamic rejection: drop every group whose advantages are all zero.

    Groups whose K rollouts all succeeded or all failed carry no gradient
    (Section 4.2); dropping them keeps every PPO minibatch full of signal.
    Kept groups pass untouched. Counters: ``dropped_all_success``,
    ``dropped_all_failure`` (rewards all > 0 / all <= 0), ``kept_groups``.

    When the data has no advantage yet (the filter runs before
    :class:`RLOOAdvantage` on the write path), it queues rows until their
    group is complete and tests reward equality instead; it takes K from
    ``group_size`` or from an :class:`RLOOAdvantage` on the same buffer.

    Keyword Args:
        group_key (NestedKey): defaults to ``"group_id"``.
        advantage_key (NestedKey): defaults to ``"advantage"``.
        reward_key (NestedKey): defaults to ``"reward"``.
        group_size (int, optional): K, needed only without an RLOOAdvantage.
        atol (float): advantages with ``|A| <= atol`` count as zero.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> f = ZeroAdvantageFilter()
        >>> td = TensorDict(group_id=torch.tensor([0, 0, 1, 1]),
        ...                 advantage=torch.tensor([[0.0], [0.0], [1.0], [-1.0]]),
        ...                 reward=torch.tensor([1.0, 1.0, 1.0, 0.0]), batch_size=[4])
        >>> f.inv(td)["group_id"], f.dropped_all_success
        (tensor([1, 1]), 1)
    """

    def __init__(
        self,
        *,
        group_key: NestedKey = "group_id",
        advantage_key: NestedKey = "advantage",
        reward_key: NestedKey = "reward",
        group_size: int | None = None,
        atol: float = 1e-6,
    ) -> None:
        super().__init__(in_keys=[], out_keys=[])
        if group_size is not None:
            check_group_sizes(group_size)
        self.group_key = group_key
        self.advantage_key = advantage_key
        self.reward_key = reward_key
        self.group_size = None if group_size is None else int(group_size)
        self.atol = float(atol)
        self._queue = _GroupQueue(group_key)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.dropped_all_success = 0
        self.dropped_all_failure = 0
        self.kept_groups = 0

    @property
    def dropped_groups(self) -> int:
        return self.dropped_all_success + self.dropped_all_failure

    @property
    def num_pending(self) -> int:
        return len(self._queue)

    def clear_pending(self) -> None:
        self._queue.clear()

    def set_container(self, container) -> None:
        # remember the Compose this filter sits in (a replay buffer's transforms):
        # its RLOOAdvantage gives K when the filter runs first on the write path
        super().set_container(container)
        self.__dict__["_siblings"] = weakref.ref(container) if isinstance(container, Compose) else None

    def reset_parent(self) -> None:
        super().reset_parent()
        self.__dict__["_siblings"] = None

    def __getstate__(self):
        state = super().__getstate__()
        siblings = state.get("_siblings")
        state["_siblings"] = siblings() if siblings is not None else None  # weakrefs do not pickle
        return state

    def __setstate__(self, state):
        siblings = state.get("_siblings")
        state["_siblings"] = weakref.ref(siblings) if siblings is not None else None
        super().__setstate__(state)

    def _resolve_group_size(self) -> int:
        if self.group_size is not None:
            return self.group_size
        siblings = self.__dict__.get("_siblings")
        compose = siblings() if siblings is not None else None
        if compose is not None:
            for transform in compose.transforms:
                if isinstance(transform, RLOOAdvantage):
                    return transform.group_size
        raise RuntimeError(
            f"ZeroAdvantageFilter got data without {self.advantage_key!r} and does "
            "not know the group size: append an RLOOAdvantage to the same replay "
            "buffer, or pass ZeroAdvantageFilter(group_size=K)."
        )

    def _keep(self, group: TensorDictBase) -> bool:
        rewards = _trajectory_rewards(group, self.reward_key)
        advantage = group.get(self.advantage_key, None)
        if advantage is not None:
            informative = bool((advantage.abs() > self.atol).any())
        else:
            informative = bool((rewards != rewards[0]).any())
        if informative:
            self.kept_groups += 1
        elif bool((rewards > 0).all()):
            self.dropped_all_success += 1
        else:
            self.dropped_all_failure += 1
        return informative

    def _inv_call(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        if tensordict is None or tensordict.numel() == 0:
            return None
        if self.advantage_key in tensordict.keys(include_nested=True):
            groups = _split_groups(tensordict, self.group_key)
        else:
            groups = self._queue.push(tensordict, self._resolve_group_size())
        return _cat([group for group in groups if self._keep(group)])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kept={self.kept_groups}, "
            f"dropped_all_success={self.dropped_all_success}, "
            f"dropped_all_failure={self.dropped_all_failure})"
        )


def _split_groups(tensordict: TensorDictBase, group_key: NestedKey) -> list[TensorDictBase]:
    ids = tensordict.get(group_key).reshape(tensordict.shape[0], -1)[:, 0]
    return [tensordict[ids == group] for group in torch.unique(ids, sorted=False)]
