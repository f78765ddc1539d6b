"""Turn any network into the two RIPT actor kinds (TorchRL ``ProbabilisticActor``).

Networks must accept any number of leading batch dims: the collector calls
them on ``[n_envs, ...]`` observations, the loss on ``[n_steps, ...]``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_ript.modules.distributions import (
    IndependentLaplace,
    IndependentGaussian,
    TokenCategorical,
)

__all__ = [
    "ContinuousScoring",
    "make_token_actor",
    "make_continuous_actor",
    "make_rollout_policy",
    "score_per_action",
]

_CONTINUOUS = {"laplace": IndependentLaplace, "gaussian": IndependentGaussian}


def make_token_actor(
    network: nn.Module | TensorDictModuleBase,
    *,
    in_keys: Sequence[NestedKey] | None = None,
    logits_key: NestedKey = "logits",
    tokens_key: NestedKey = "action_tokens",
    log_prob_key: NestedKey = "action_log_prob",
    temperature: float = 1.0,
    top_k: int | None = None,
) -> ProbabilisticActor:
    """Categorical actor over a sequence of action tokens (QueST-style).

    One decision is a sequence of ``L`` tokens. The network writes
    ``logits_key`` (``[*batch, L, V]``); the actor samples ``tokens_key``
    (``[*batch, L]``) and writes the summed token log-prob under
    ``log_prob_key``. ``temperature``/``top_k`` change the distribution that
    is both sampled and scored (see :class:`TokenCategorical`).

    Args:
        network: a ``TensorDictModule`` writing ``logits_key``, or a plain
            ``nn.Module`` called on the tensors of ``in_keys``.

    Keyword Args:
        in_keys: inputs of a plain ``nn.Module`` network.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> net = nn.Sequential(nn.Linear(4, 3 * 5), nn.Unflatten(-1, (3, 5)))
        >>> actor = make_token_actor(net, in_keys=[("observation", "state")])
        >>> td = TensorDict({("observation", "state"): torch.randn(2, 4)}, [2])
        >>> with set_exploration_type(ExplorationType.RANDOM):
        ...     out = actor(td)
        >>> out["action_tokens"].shape, out["action_log_prob"].shape
        (torch.Size([2, 3]), torch.Size([2]))
    """
    module = _as_td_module(network, in_keys, [logits_key])
    return ProbabilisticActor(
        module,
        in_keys={"logits": logits_key},
        out_keys=[tokens_key],
        distribution_class=TokenCategorical,
        distribution_kwargs={"temperature": temperature, "top_k": top_k},
        return_log_prob=True,
        log_prob_key=log_prob_key,
    )


def make_continuous_actor(
    network: nn.Module | TensorDictModuleBase,
    *,
    distribution: str = "laplace",
    in_keys: Sequence[NestedKey] | None = None,
    loc_key: NestedKey = "loc",
    scale_key: NestedKey = "scale",
    action_key: NestedKey = "action",
    log_prob_key: NestedKey = "action_log_prob",
    scale_multiplier: float = 1.0,
    scale_multiplier_source: object | None = None,
    event_dims: int = 2,
) -> ProbabilisticActor:
    """Laplace (or Gaussian) actor over a continuous action chunk (OFT-style).

    The network writes the action head's mean (``loc_key``) and the scale
    head's output (``scale_key``), both ``[*batch, chunk, A]`` (``event_dims=1``
    for a single action ``[*batch, A]``). Rollouts sample
    (``ExplorationType.RANDOM``), evaluation takes the mean
    (``DETERMINISTIC``). ``scale_multiplier`` widens exploration and is part
    of the scored distribution; ``scale_multiplier_source`` (e.g. the
    network's config) is an object whose ``scale_multiplier`` attribute is
    read at every call instead, so changing it changes sampling and scoring
    at once. The options live in a :class:`ContinuousScoring`
    (``actor[-1].distribution_kwargs``).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mean = nn.Linear(4, 2 * 3)
        ...         self.log_scale = nn.Linear(4, 2 * 3)
        ...     def forward(self, x):
        ...         return (self.mean(x).unflatten(-1, (2, 3)),
        ...                 self.log_scale(x).exp().unflatten(-1, (2, 3)))
        >>> actor = make_continuous_actor(Net(), in_keys=[("observation", "state")])
        >>> out = actor(TensorDict({("observation", "state"): torch.randn(5, 4)}, [5]))
        >>> out["action"].shape, out["action_log_prob"].shape
        (torch.Size([5, 2, 3]), torch.Size([5]))
    """
    if distribution not in _CONTINUOUS:
        raise ValueError(
            f"distribution must be one of {sorted(_CONTINUOUS)}, got {distribution!r}."
        )
    module = _as_td_module(network, in_keys, [loc_key, scale_key])
    return ProbabilisticActor(
        module,
        in_keys={"loc": loc_key, "scale": scale_key},
        out_keys=[action_key],
        distribution_class=_CONTINUOUS[distribution],
        distribution_kwargs=ContinuousScoring(
            scale_multiplier=scale_multiplier, source=scale_multiplier_source, event_dims=event_dims
        ),
        return_log_prob=True,
        log_prob_key=log_prob_key,
    )


class ContinuousScoring(Mapping):
    """The options of a continuous actor's distribution, read at every call.

    ``{"scale_multiplier", "event_dims"}`` as the actor's
    ``distribution_kwargs``: sampling and the scored log-prob see the same
    values whenever they change. ``scale_multiplier`` is the fixed value, or
    the ``scale_multiplier`` attribute of ``source`` (e.g. a network config,
    what ``set_sampling`` changes) when ``source`` is given. ``event_dims``
    is how many trailing dims one log-prob sums: 2 for a ``[chunk, A]``
    decision, 1 per action of the chunk (:func:`score_per_action`).

    Examples:
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(scale_multiplier=1.0)
        >>> options = ContinuousScoring(source=config)
        >>> config.scale_multiplier = 2.0
        >>> dict(options)
        {'scale_multiplier': 2.0, 'event_dims': 2}
    """

    _KEYS = ("scale_multiplier", "event_dims")

    def __init__(self, *, scale_multiplier: float = 1.0, source: object | None = None, event_dims: int = 2) -> None:
        if source is None and not scale_multiplier > 0:
            raise ValueError(f"scale_multiplier must be > 0, got {scale_multiplier}.")
        self._scale_multiplier = float(scale_multiplier)
        self.source = source
        self.event_dims = int(event_dims)
        self.per_action = False  # set by score_per_action

    @property
    def scale_multiplier(self) -> float:
        if self.source is None:
            return self._scale_multiplier
        return float(getattr(self.source, "scale_multiplier", 1.0))

    def __getitem__(self, key: str):
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def __repr__(self) -> str:
        return f"ContinuousScoring({dict(self)})"


def score_per_action(actor: TensorDictModuleBase) -> TensorDictModuleBase:
    """Make a chunk actor score each action of its chunk separately (in place).

    A continuous actor over ``[chunk, A]`` decisions (``event_dims=2``) then
    writes a log-prob per action, ``[*batch, chunk]`` (summed over the ``A``
    action dims only), for sampling and scoring alike; PPO then has one ratio
    per action (``RIPTClipPPOLoss(ratio="action")`` calls this). Calling it
    again is a no-op. Returns ``actor``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> class Net(nn.Module):
        ...     def forward(self, x):
        ...         return torch.zeros(*x.shape[:-1], 4, 2), torch.ones(*x.shape[:-1], 4, 2)
        >>> actor = score_per_action(make_continuous_actor(Net(), in_keys=["obs"]))
        >>> actor(TensorDict(obs=torch.zeros(3, 5), batch_size=[3]))["action_log_prob"].shape
        torch.Size([3, 4])
    """
    options = _continuous_scoring(actor)
    if options.per_action:
        return actor
    if options.event_dims < 2:
        raise ValueError(
            f"per-action scoring needs a chunk actor (event_dims=2, decisions [chunk, A]); this actor "
            f"scores single actions (event_dims={options.event_dims}): use the decision ratio (ratio='step')."
        )
    options.event_dims -= 1
    options.per_action = True
    return actor


def _continuous_scoring(actor: TensorDictModuleBase) -> ContinuousScoring:
    for module in actor.modules():
        options = getattr(module, "distribution_kwargs", None)
        if isinstance(options, ContinuousScoring):
            return options
    raise ValueError(
        f"{type(actor).__name__} is not a continuous chunk actor (make_continuous_actor): per-action "
        "ratios need a factorised Laplace/Gaussian over [chunk, A]; token actors use ratio='step'."
    )


def make_rollout_policy(
    actor: ProbabilisticActor, decoder: TensorDictModuleBase | None = None
) -> TensorDictModuleBase:
    """The module a collector runs: the actor, then (optionally) a decoder.

    A token actor samples tokens; the env needs actions. ``decoder`` maps the
    sampled tokens (and any observation it reads) to the env's ``"action"``.
    The loss scores the actor alone, so the decoder carries no gradient.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> net = nn.Sequential(nn.Linear(4, 2 * 8), nn.Unflatten(-1, (2, 8)))
        >>> actor = make_token_actor(net, in_keys=["obs"])
        >>> bins = torch.linspace(-1, 1, 8)
        >>> decoder = TensorDictModule(lambda t: bins[t], in_keys=["action_tokens"], out_keys=["action"])
        >>> policy = make_rollout_policy(actor, decoder)
        >>> policy(TensorDict(obs=torch.randn(3, 4), batch_size=[3]))["action"].shape
        torch.Size([3, 2])
    """
    if decoder is None:
        return actor
    return TensorDictSequential(actor, decoder)


def _as_td_module(network, in_keys, out_keys) -> TensorDictModuleBase:
    if isinstance(network, TensorDictModuleBase):
        missing = [key for key in out_keys if key not in network.out_keys]
        if missing:
            raise ValueError(
                f"the network writes {network.out_keys} but the actor reads {missing}: "
                "set the network's out_keys or pass matching *_key arguments."
            )
        return network
    if not in_keys:
        raise ValueError(
            "a plain nn.Module network needs in_keys= naming the tensordict entries "
            "it is called on (or pass a TensorDictModule)."
        )
    return TensorDictModule(network, in_keys=list(in_keys), out_keys=list(out_keys))
