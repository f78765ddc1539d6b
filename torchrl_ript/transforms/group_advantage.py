"""Leave-one-out advantages and dynamic rejection as replay-buffer transforms.

Both work on write (``ReplayBuffer.extend`` calls their ``inv``), on
trajectory rows (``batch_size [N]``, one row per rollout, the trajectory
reward under ``reward_key``). A group is judged once, in one pass:
:class:`RLOOAdvantage` holds partial groups until all K members have
arrived (like TorchRL's :class:`~torchrl.objectives.llm.MCAdvantage`) and
writes complete groups with their advantages; :class:`ZeroAdvantageFilter`
then drops the groups whose advantages are all zero (all rewards equal) and
counts them. The filter needs the advantages, so it must run *after* the
advantage on the write path: a replay buffer runs write-side transforms in
reverse order of appending, so append the filter first
(:func:`~torchrl_ript.collectors.make_ript_replay_buffer` does).

Why not TorchRL's :class:`~torchrl.objectives.llm.MCAdvantage`, which queues
groups the same way: it writes group-*normalised* advantages
(``(R_i - mean) / std``, GRPO) on per-step rows, while RIPT's Eq. 5 is the
unnormalised leave-one-out ``R_k - mean_{j != k} R_j`` on trajectory rows,
and its dynamic sampling must report which groups it dropped and why.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs.transforms import Transform

from torchrl_ript.config import check_group_sizes

__all__ = ["RLOOAdvantage", "ZeroAdvantageFilter", "random_sign_advantages"]


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
        >>> # on a replay buffer with the zero-advantage filter (write-side transforms
        >>> # run in reverse order of appending: the filter judges the advantages)
        >>> from torchrl.data import LazyTensorStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=LazyTensorStorage(16))
        >>> rb = rb.append_transform(ZeroAdvantageFilter())
        >>> rb = rb.append_transform(RLOOAdvantage(2))
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
    Kept groups pass untouched. This is the one place where a group is judged
    uniform: its counters ``dropped_all_success``, ``dropped_all_failure``
    (rewards all > 0 / all <= 0) and ``kept_groups`` are what
    :class:`~torchrl_ript.collectors.GroupCollector` reports. With
    ``drop=False`` it only counts (dynamic sampling off, the paper's ablation).

    It judges complete groups with advantages, as :class:`RLOOAdvantage`
    writes them: on a replay buffer, append it *before* the advantage
    (write-side transforms run in reverse order of appending).

    Keyword Args:
        group_key (NestedKey): defaults to ``"group_id"``.
        advantage_key (NestedKey): defaults to ``"advantage"``.
        reward_key (NestedKey): defaults to ``"reward"``.
        drop (bool): drop uniform groups (``False``: count them, keep all).
            Defaults to True.
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
        drop: bool = True,
        atol: float = 1e-6,
    ) -> None:
        super().__init__(in_keys=[], out_keys=[])
        self.group_key = group_key
        self.advantage_key = advantage_key
        self.reward_key = reward_key
        self.drop = bool(drop)
        self.atol = float(atol)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.dropped_all_success = 0
        self.dropped_all_failure = 0
        self.kept_groups = 0

    @property
    def dropped_groups(self) -> int:
        return self.dropped_all_success + self.dropped_all_failure

    def _keep(self, group: TensorDictBase) -> bool:
        rewards = _trajectory_rewards(group, self.reward_key)
        informative = bool((group.get(self.advantage_key).abs() > self.atol).any())
        if informative:
            self.kept_groups += 1
        elif bool((rewards > 0).all()):
            self.dropped_all_success += 1
        else:
            self.dropped_all_failure += 1
        return informative or not self.drop

    def _inv_call(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        if tensordict is None or tensordict.numel() == 0:
            return None
        if self.advantage_key not in tensordict.keys(include_nested=True):
            raise KeyError(
                f"ZeroAdvantageFilter got rows without {self.advantage_key!r}: it judges the "
                "advantages of complete groups, so it must run after the advantage transform. A "
                "replay buffer runs write-side transforms in reverse order of appending: append "
                "ZeroAdvantageFilter *before* RLOOAdvantage (or use make_ript_replay_buffer)."
            )
        return _cat([group for group in _split_groups(tensordict, self.group_key) if self._keep(group)])

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(drop={self.drop}, kept={self.kept_groups}, "
            f"dropped_all_success={self.dropped_all_success}, "
            f"dropped_all_failure={self.dropped_all_failure})"
        )


def _split_groups(tensordict: TensorDictBase, group_key: NestedKey) -> list[TensorDictBase]:
    """The rows of each group, groups in order of first appearance (the write order)."""
    ids = tensordict.get(group_key).reshape(tensordict.shape[0], -1)[:, 0]
    return [tensordict[ids == group] for group in dict.fromkeys(ids.tolist())]


def random_sign_advantages(advantage: torch.Tensor, *, seed: int) -> torch.Tensor:
    """The null advantages: the same magnitudes, a random sign per trajectory (seeded).

    What the signal audit's null update and a control run (``RIPTTrainer(null_advantages=True)``)
    train on: the update's size without its relation to the reward.

    Examples:
        >>> import torch
        >>> a = torch.tensor([[0.5], [-0.5], [1.0], [-1.0]])
        >>> null = random_sign_advantages(a, seed=0)
        >>> torch.equal(null.abs(), a.abs()), null.shape, torch.equal(null, random_sign_advantages(a, seed=0))
        (True, torch.Size([4, 1]), True)
    """
    generator = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (advantage.shape[0],), generator=generator).to(advantage.dtype) * 2 - 1
    return advantage.abs() * signs.to(advantage.device).reshape(-1, *([1] * (advantage.ndim - 1)))
