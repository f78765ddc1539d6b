"""The policy registry: one :class:`PolicyKind` entry per kind of policy network.

An entry says everything the pipeline needs to know about a kind: how to
build a fresh network (:attr:`PolicyKind.build`), how to wrap it as the
actor the PPO loss scores and the module rollouts run
(:meth:`PolicyKind.wrap`), how to train it from demonstrations
(:attr:`PolicyKind.sft`, :attr:`PolicyKind.finetune`), which sampling
options may change on a trained network (:attr:`PolicyKind.sampling_fields`)
and how it goes to and from a :func:`~torchrl_ript.models.save_policy` file
(:attr:`PolicyKind.checkpoint_state`, :attr:`PolicyKind.load`). The built-in
kinds register themselves next to their models: ``"quest"``
(:mod:`~torchrl_ript.models.quest`), ``"regression"``
(:mod:`~torchrl_ript.models.regression_policy`) and ``"hf"``
(:mod:`~torchrl_ript.models.hf_vla`).

A new kind is one :func:`register_policy_kind` call; the pipeline
(``policy.kind=<name>`` in the examples), checkpoints and
:func:`set_sampling` then handle it like the built-in ones. Its network
needs a ``config`` attribute (a dataclass, or an object with ``to_dict()``)
with ``action_dim`` and ``chunk_size`` (demos are cut into chunks of that
size for SFT).

Examples:
    >>> import torch
    >>> from dataclasses import dataclass
    >>> from torchrl_ript.modules.actors import make_continuous_actor
    >>> @dataclass
    ... class LinearConfig:
    ...     action_dim: int = 2
    ...     chunk_size: int = 1
    >>> class Linear(torch.nn.Module):
    ...     def __init__(self, config, state_dim=4):
    ...         super().__init__()
    ...         self.config, self.layer = config, torch.nn.Linear(state_dim, 2 * config.action_dim)
    ...     def forward(self, state):
    ...         loc, log_scale = self.layer(state).chunk(2, -1)
    ...         return loc, log_scale.exp()
    >>> _ = register_policy_kind(PolicyKind(
    ...     name="linear_doc", network_class=Linear, config_class=LinearConfig,
    ...     build=lambda spec: Linear(LinearConfig(action_dim=spec.action_dim), spec.state_dim),
    ...     make_actor=lambda net: make_continuous_actor(net, in_keys=[("observation", "state")], event_dims=1),
    ...     sft=lambda bundle, batches, options: {}))
    >>> bundle = build_policy("linear_doc", preset="tiny", action_dim=2, state_dim=4, image_keys=(), image_size=0)
    >>> bundle.kind, bundle.sampled_key, bundle.n_exec, policy_kind_of(bundle.network).name
    ('linear_doc', 'action', 1, 'linear_doc')
    >>> _ = unregister_policy_kind("linear_doc")
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.modules import ProbabilisticActor

__all__ = [
    "BuildSpec",
    "SFTOptions",
    "PolicyBundle",
    "PolicyKind",
    "register_policy_kind",
    "unregister_policy_kind",
    "policy_kind",
    "policy_kind_of",
    "policy_kinds",
    "build_policy",
    "wrap_policy",
    "set_sampling",
    "config_dict",
    "scale_parameters",
    "SCALE_FITS",
]


#: the ways a scale head can be fitted (:attr:`SFTOptions.scale_fit`)
SCALE_FITS = ("heldout", "insample")


@dataclass(frozen=True)
class BuildSpec:
    """What a fresh policy is built for: the arguments of :func:`build_policy`.

    Attributes:
        action_dim, state_dim: sizes of the env's action and proprio state.
        image_keys, image_size: the cameras the policy reads and their size.
        preset: a size preset of the kind (``"tiny"``, ``"small"``, ``"paper"``).
        overrides: config fields of the kind, over the preset's.
        encoder_overrides: observation-encoder fields over the preset's.
        pretrained: a local folder of pretrained weights (``"hf"``).
    """

    action_dim: int
    state_dim: int = 0
    image_keys: tuple = ()
    image_size: int = 0
    preset: str = "small"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    encoder_overrides: Mapping[str, Any] = field(default_factory=dict)
    pretrained: str | None = None

    def encoder(self) -> dict:
        """``encoder_overrides`` with the env's cameras, image size and state size.

        Examples:
            >>> BuildSpec(action_dim=4, state_dim=8, image_keys=[("observation", "image")], image_size=32,
            ...           encoder_overrides={"embed_dim": 16}).encoder()
            {'embed_dim': 16, 'image_keys': (('observation', 'image'),), 'image_size': 32, 'state_dim': 8}
        """
        encoder = dict(self.encoder_overrides)
        encoder.update(image_keys=tuple(self.image_keys), image_size=self.image_size, state_dim=self.state_dim)
        return encoder


@dataclass(frozen=True)
class SFTOptions:
    """The settings an SFT recipe (:attr:`PolicyKind.sft`) reads.

    Attributes:
        steps: gradient steps of the main stage (QueST: the prior; regression: the mean head).
        lr: learning rate.
        autoencoder_steps: QueST's stage 1 (``None``: ``steps``).
        scale_steps: steps of a scale head's NLL fit.
        scale_fit: how a scale head is fitted (regression, hf): ``"heldout"``
            (default): on demos the mean head did not see during its first
            stage, so the scale reflects held-out error; ``"insample"``: on
            the demos the mean was fitted to (overconfident: the mean's error
            there is smaller than on new states). See
            :func:`~torchrl_ript.models.regression_policy.regression_sft`.
        scale_holdout: ``"heldout"``: the share of demos held out of the mean's
            first stage for the scale fit (at least one demo).
        scale_refit: ``"heldout"``: the share of ``steps`` the mean trains on all
            demos after the held-out residuals are taken (0: the final mean never
            sees the held-out demos).
        progress: show progress bars.

    Examples:
        >>> SFTOptions(steps=10, scale_fit="in-sample")
        Traceback (most recent call last):
        ...
        ValueError: scale_fit must be one of ('heldout', 'insample'), got 'in-sample'.
    """

    steps: int
    lr: float = 3e-4
    autoencoder_steps: int | None = None
    scale_steps: int = 500
    scale_fit: str = "heldout"
    scale_holdout: float = 0.2
    scale_refit: float = 0.25
    progress: bool = True

    def __post_init__(self):
        if self.scale_fit not in SCALE_FITS:
            raise ValueError(f"scale_fit must be one of {SCALE_FITS}, got {self.scale_fit!r}.")
        if not 0 < self.scale_holdout < 1:
            raise ValueError(f"scale_holdout must be in (0, 1) (a share of the demos), got {self.scale_holdout}.")
        if not 0 <= self.scale_refit < 1:
            raise ValueError(f"scale_refit must be in [0, 1) (a share of the mean's steps), got {self.scale_refit}.")


@dataclass
class PolicyBundle:
    """A network with the two modules RIPT needs from it.

    Attributes:
        kind: the registered kind (``"quest"``, ``"regression"``, ``"hf"``...).
        network: the policy network (e.g. :class:`~torchrl_ript.models.QuestPolicy`).
        actor: the ``ProbabilisticActor`` the PPO loss scores.
        policy: what rollouts run (QueST: actor then token decoder).
        sampled_key: the entry the loss scores (``"action_tokens"`` / ``"action"``).
        n_exec: actions executed per decision (the env's ``action_chunk``).
    """

    kind: str
    network: nn.Module
    actor: ProbabilisticActor
    policy: TensorDictModuleBase
    sampled_key: str
    n_exec: int

    def decisions(self, max_env_steps: int) -> int:
        """Decision steps that cover ``max_env_steps`` env steps."""
        return math.ceil(max_env_steps / self.n_exec)


SFTRecipe = Callable[[PolicyBundle, Iterator[TensorDictBase], SFTOptions], dict[str, list[float]]]


@dataclass(frozen=True)
class PolicyKind:
    """Everything the pipeline does with one kind of policy network.

    Attributes:
        name: the kind's name (``policy.kind`` in the configs; stored in checkpoints).
        network_class: the network's class (a network's kind is looked up by it).
        config_class: its config class; a checkpoint's config dict rebuilds it.
        build: :class:`BuildSpec` -> a fresh network.
        make_actor: network -> the ``ProbabilisticActor`` the loss scores.
        sft: ``(bundle, batches, options)`` -> per-step losses by stage: behaviour
            cloning from scratch on endless minibatches of demo chunks
            (``"action"`` ``[B, chunk, A]``, ``"action_mask"``, observations).
        finetune: the same for a pretrained network (default: :attr:`sft`).
        make_policy: ``(network, actor)`` -> the module rollouts run
            (default: the actor itself).
        sampled_key: the entry the actor samples and the loss scores.
        n_exec: network -> actions executed per decision (default:
            ``network.config.chunk_size``).
        sampling_fields: config fields that may change on a trained network
            (part of the scored distribution, see :func:`set_sampling`).
        check_sampling: ``(network, options)`` -> raise ``ValueError`` on bad values.
        checkpoint_state: network -> the tensors a checkpoint stores
            (default: its ``state_dict()``).
        load: ``(config dict, state)`` -> the rebuilt network (default:
            ``network_class(config_class(**config))`` loading ``state``).
        scale_parameters: network -> the parameters of its scale head (a
            continuous policy's density width), which RIPT leaves frozen unless
            ``ript.train_scale`` (:func:`scale_parameters`); ``None``: none.
    """

    name: str
    network_class: type
    config_class: type
    build: Callable[[BuildSpec], nn.Module]
    make_actor: Callable[[nn.Module], ProbabilisticActor]
    sft: SFTRecipe
    finetune: SFTRecipe | None = None
    make_policy: Callable[[nn.Module, ProbabilisticActor], TensorDictModuleBase] | None = None
    sampled_key: str = "action"
    n_exec: Callable[[nn.Module], int] | None = None
    sampling_fields: tuple[str, ...] = ()
    check_sampling: Callable[[nn.Module, dict], None] | None = None
    checkpoint_state: Callable[[nn.Module], dict] | None = None
    load: Callable[[dict, dict], nn.Module] | None = None
    scale_parameters: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None

    def wrap(self, network: nn.Module) -> PolicyBundle:
        """The network as actor + rollout policy (a :class:`PolicyBundle`)."""
        actor = self.make_actor(network)
        policy = actor if self.make_policy is None else self.make_policy(network, actor)
        n_exec = network.config.chunk_size if self.n_exec is None else self.n_exec(network)
        return PolicyBundle(self.name, network, actor, policy, self.sampled_key, int(n_exec))

    def finetune_recipe(self) -> SFTRecipe:
        """:attr:`finetune`, or :attr:`sft` when the kind has no separate fine-tune recipe."""
        return self.sft if self.finetune is None else self.finetune

    def state_of(self, network: nn.Module) -> dict:
        """What a checkpoint stores of ``network``."""
        return network.state_dict() if self.checkpoint_state is None else self.checkpoint_state(network)

    def rebuild(self, config: dict, state: dict) -> nn.Module:
        """The network a checkpoint's ``config`` and ``state`` describe."""
        if self.load is not None:
            return self.load(config, state)
        network = self.network_class(self.config_class(**config))
        network.load_state_dict(state)
        return network


_KINDS: dict[str, PolicyKind] = {}


def register_policy_kind(kind: PolicyKind, *, replace: bool = False) -> PolicyKind:
    """Add ``kind`` to the registry (``replace=True`` overwrites one of the same name).

    Returns ``kind``. A name or a network class already registered (under
    another kind) raises ``ValueError`` unless ``replace``.
    """
    if not isinstance(kind, PolicyKind):
        raise TypeError(f"register a PolicyKind, got {type(kind).__name__}.")
    if not replace:
        if kind.name in _KINDS:
            raise ValueError(f"policy kind {kind.name!r} is already registered (pass replace=True to overwrite).")
        for other in _KINDS.values():
            if other.network_class is kind.network_class:
                raise ValueError(
                    f"{kind.network_class.__name__} is already the network of policy kind {other.name!r}."
                )
    _KINDS[kind.name] = kind
    return kind


def unregister_policy_kind(name: str) -> PolicyKind:
    """Remove and return the kind ``name`` (e.g. at the end of a test)."""
    policy_kind(name)
    return _KINDS.pop(name)


def policy_kinds() -> tuple[str, ...]:
    """Names of the registered kinds, sorted.

    Examples:
        >>> policy_kinds()
        ('hf', 'quest', 'regression')
    """
    return tuple(sorted(_KINDS))


def policy_kind(name: str) -> PolicyKind:
    """The registered kind ``name``.

    Examples:
        >>> policy_kind("quest").sampling_fields
        ('temperature', 'top_k')
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"policy kind must be one of {policy_kinds()}, got {name!r}.") from None


def policy_kind_of(network: nn.Module) -> PolicyKind:
    """The registered kind of ``network`` (its exact class first, then a base class).

    Examples:
        >>> from torchrl_ript.models.regression_policy import RegressionPolicy, regression_config
        >>> policy_kind_of(RegressionPolicy(regression_config("tiny"))).name
        'regression'
    """
    for kind in _KINDS.values():
        if type(network) is kind.network_class:
            return kind
    for kind in _KINDS.values():
        if isinstance(network, kind.network_class):
            return kind
    raise TypeError(
        f"no policy kind is registered for {type(network).__name__} (registered: {policy_kinds()}): "
        "register one with torchrl_ript.models.register_policy_kind."
    )


def build_policy(
    kind: str,
    *,
    preset: str,
    action_dim: int,
    state_dim: int,
    image_keys: tuple,
    image_size: int,
    overrides: dict | None = None,
    encoder_overrides: dict | None = None,
    pretrained: str | None = None,
) -> PolicyBundle:
    """A fresh (untrained) policy of ``kind`` at ``preset`` size, wrapped.

    ``kind="hf"`` loads a Hugging Face VLA from the *local* folder
    ``pretrained`` and adds LoRA and fresh action/scale heads
    (:class:`~torchrl_ript.models.hf_vla.HFVLAConfig` fields in ``overrides``;
    ``preset`` and the encoder settings do not apply: the backbone has its own).

    Examples:
        >>> bundle = build_policy("quest", preset="tiny", action_dim=4, state_dim=4,
        ...                       image_keys=[("observation", "image")], image_size=32)
        >>> bundle.kind, bundle.sampled_key, bundle.network.config.encoder.state_dim
        ('quest', 'action_tokens', 4)
    """
    entry = policy_kind(kind)
    spec = BuildSpec(
        action_dim=action_dim, state_dim=state_dim, image_keys=tuple(image_keys), image_size=image_size,
        preset=preset, overrides=dict(overrides or {}), encoder_overrides=dict(encoder_overrides or {}),
        pretrained=pretrained,
    )
    return wrap_policy(entry.build(spec))


def wrap_policy(network: nn.Module) -> PolicyBundle:
    """Wrap a trained (or loaded) network of a registered kind as actor + rollout policy."""
    network.eval()  # no dropout/BN noise: sampling-time and loss log-probs must agree
    return policy_kind_of(network).wrap(network)


def set_sampling(network: nn.Module, **options) -> nn.Module:
    """Change how a built or loaded network samples (QueST: ``temperature``, ``top_k``).

    These options are part of the distribution that rollouts sample from and
    that the loss scores, so they are safe to change on a trained checkpoint;
    :func:`~torchrl_ript.models.save_policy` stores them with the weights.
    ``None`` values are ignored. It may be called before or after
    :func:`wrap_policy`: the actor reads the live config on every call, so
    sampling and scoring agree. The kind's :attr:`PolicyKind.sampling_fields`
    are the valid options; nothing is changed when one is invalid.

    Examples:
        >>> from torchrl_ript.models.quest import QuestPolicy, quest_config
        >>> net = set_sampling(QuestPolicy(quest_config("tiny")), top_k=5)
        >>> net.config.top_k
        5
    """
    kind = policy_kind_of(network)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(kind.sampling_fields))
    if unknown:
        raise ValueError(
            f"{type(network).__name__} has no sampling option(s) {unknown}; "
            f"valid: {list(kind.sampling_fields) or 'none'}."
        )
    if kind.check_sampling is not None:
        kind.check_sampling(network, options)
    for key, value in options.items():
        setattr(network.config, key, value)
    return network


def config_dict(config) -> dict:
    """A network config as a plain dict (its ``to_dict()``, else a dataclass's fields).

    Examples:
        >>> config_dict(SFTOptions(steps=3))["steps"]
        3
    """
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if is_dataclass(config):
        return asdict(config)
    raise TypeError(f"a policy config must be a dataclass or have to_dict(), got {type(config).__name__}.")


def scale_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The scale-head parameters of every registered policy network inside ``module``.

    ``module`` is a network, or an actor / rollout policy around one: each
    submodule that is the network of a registered kind contributes its
    kind's :attr:`PolicyKind.scale_parameters`. Empty when there is none
    (QueST, a plain actor of your own).

    Examples:
        >>> from torchrl_ript.models.regression_policy import RegressionPolicy, regression_config
        >>> from torchrl_ript.models.regression_policy import make_regression_actor
        >>> net = RegressionPolicy(regression_config("tiny"))
        >>> len(scale_parameters(make_regression_actor(net))) == len(list(net.scale_head.parameters()))
        True
    """
    found: dict[int, nn.Parameter] = {}
    classes = {kind.network_class: kind for kind in _KINDS.values() if kind.scale_parameters is not None}
    for sub in module.modules():
        kind = classes.get(type(sub))
        if kind is not None:
            for param in kind.scale_parameters(sub):
                found.setdefault(id(param), param)
    return list(found.values())
