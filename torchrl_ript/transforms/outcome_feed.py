"""Report every finished rollout to the context sampler it was drawn by."""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs.transforms import Transform

__all__ = ["ContextOutcomeFeed"]


class ContextOutcomeFeed(Transform):
    """Replay-buffer transform that reports each written rollout's outcome to a context sampler.

    Append it *last* to a RIPT replay buffer (write-side transforms run in
    reverse order of appending, so it sees every finished trajectory before
    dynamic sampling drops uniform groups); it passes the data through
    unchanged and calls ``dataset.record_outcomes(context_ids, rewards > 0)``.
    :func:`~torchrl_ript.collectors.make_ript_replay_buffer` appends it when
    its ``outcome_feed`` is given; :class:`~torchrl_ript.collectors.GroupCollector`
    does so for samplers that learn from outcomes (e.g.
    :class:`~torchrl_ript.data.samplers.AdaptiveSampler`).

    Args:
        dataset: the :class:`~torchrl_ript.data.ContextDataset` the collector draws from.

    Keyword Args:
        context_key, reward_key: the trajectory entries read.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_ript.data import ContextDataset
        >>> ds = ContextDataset(torch.zeros(2, 1), [0, 0], ["t"], sampler="adaptive")
        >>> feed = ContextOutcomeFeed(ds)
        >>> rows = TensorDict(context_id=torch.tensor([1, 0]), reward=torch.tensor([[1.0], [0.0]]), batch_size=[2])
        >>> feed.inv(rows)["context_id"].tolist(), ds.context_sampler.successes.tolist(), ds.context_sampler.failures.tolist()
        ([1, 0], [0.0, 1.0], [1.0, 0.0])
    """

    def __init__(self, dataset, *, context_key: NestedKey = "context_id", reward_key: NestedKey = "reward") -> None:
        super().__init__(in_keys=[], out_keys=[])
        self.dataset = dataset
        self.context_key = context_key
        self.reward_key = reward_key

    def _inv_call(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        if tensordict is None or tensordict.numel() == 0:
            return tensordict
        rewards = tensordict.get(self.reward_key).reshape(tensordict.shape[0], -1)[:, 0]
        self.dataset.record_outcomes(tensordict.get(self.context_key).reshape(-1), rewards > 0)
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sampler={self.dataset.context_sampler!r})"
