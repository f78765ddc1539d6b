"""OFT-style regression policy with a scale head (RIPT Section 4.3).

Same observation encoders as the QueST policy; an MLP trunk over the
flattened observation tokens; an action head regressing the whole action
chunk ``[B, chunk, A]`` in parallel (trained with L1 as in OpenVLA-OFT, or
MSE for a Gaussian head) and a :class:`~torchrl_ript.modules.ScaleHead` on
the same trunk features, fitted afterwards by NLL (:func:`fit_scale_head`)
with everything else frozen. :func:`make_regression_actor` wraps it as the
core's Laplace (``l1``) or Gaussian (``mse``) actor.

SFT (:func:`regression_sft`): :func:`train_regression` (mean head, L1 or
MSE), then :func:`fit_regression_scale` (scale head by NLL, everything else
frozen; :func:`torchrl_ript.modules.fit_scale_head`); a fine-tune from a
pretrained policy runs the same two stages. The policy kind ``"regression"``
(:mod:`torchrl_ript.models.registry`) is registered at the end of this module.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import MLP, ProbabilisticActor

from torchrl_ript.models.bc import masked_l1, train_bc
from torchrl_ript.models.common import EncoderConfig, ObservationEncoder, call_flat, count_parameters
from torchrl_ript.models.registry import BuildSpec, PolicyBundle, PolicyKind, SFTOptions, register_policy_kind
from torchrl_ript.modules.actors import make_continuous_actor
from torchrl_ript.modules.scale_head import ScaleHead, fit_scale_head

__all__ = [
    "RegressionConfig",
    "RegressionPolicy",
    "make_regression_actor",
    "regression_config",
    "regression_loss",
    "train_regression",
    "fit_regression_scale",
    "regression_sft",
    "REGRESSION_KIND",
]


@dataclass
class RegressionConfig:
    """Sizes of a :class:`RegressionPolicy` (see :func:`regression_config`)."""

    action_dim: int = 4
    chunk_size: int = 8
    hidden: int = 64
    trunk_layers: int = 2
    scale_hidden: int = 64
    init_scale: float = 0.1
    min_scale: float = 1e-3
    loss: str = "l1"  # "l1" -> Laplace actor, "mse" -> Gaussian actor
    tanh_mean: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}.")

    @property
    def distribution(self) -> str:
        return "laplace" if self.loss == "l1" else "gaussian"

    def to_dict(self) -> dict:
        return asdict(self)


def regression_config(preset: str = "small", **overrides) -> RegressionConfig:
    """Presets ``"tiny"`` (tests), ``"small"`` (CPU, ~1-3M), ``"paper"`` (~15M with two cameras)."""
    enc_over = overrides.pop("encoder", {}) or {}
    if isinstance(enc_over, EncoderConfig):
        enc_over = asdict(enc_over)
    if preset == "tiny":
        enc = dict(image_size=32, resnet_widths=(8, 16), resnet_blocks=(1, 1), state_hidden=32, embed_dim=32)
        cfg = dict(chunk_size=8, hidden=64, trunk_layers=2, scale_hidden=32)
    elif preset == "small":
        enc = dict(image_size=64, resnet_widths=(16, 32, 64, 128), resnet_blocks=(1, 1, 1, 1),
                   state_hidden=128, embed_dim=128)
        cfg = dict(chunk_size=8, hidden=512, trunk_layers=3, scale_hidden=256)
    elif preset == "paper":
        enc = dict(image_size=128, resnet_widths=(64, 128, 256, 512), resnet_blocks=(1, 1, 1, 1),
                   state_hidden=256, embed_dim=256, language="minilm")
        cfg = dict(chunk_size=8, hidden=1024, trunk_layers=3, scale_hidden=512)
    else:
        raise ValueError(f"unknown preset {preset!r}: use 'tiny', 'small' or 'paper'.")
    enc.update(enc_over)
    cfg.update(overrides)
    return RegressionConfig(encoder=EncoderConfig(**enc), **cfg)


class RegressionPolicy(TensorDictModuleBase):
    """Observations -> ``"loc"`` and ``"scale"`` ``[B, chunk, A]``.

    Examples:
        >>> from tensordict import TensorDict
        >>> policy = RegressionPolicy(regression_config("tiny", action_dim=4))
        >>> td = TensorDict({
        ...     ("observation", "image"): torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
        ...     ("observation", "state"): torch.zeros(2, 8),
        ...     "language_instruction": "open the drawer"}, [2])
        >>> out = policy(td)
        >>> out["loc"].shape, out["scale"].shape
        (torch.Size([2, 8, 4]), torch.Size([2, 8, 4]))
    """

    def __init__(self, config: RegressionConfig, *, loc_key: NestedKey = "loc", scale_key: NestedKey = "scale") -> None:
        super().__init__()
        self.config = config
        self.obs_encoder = ObservationEncoder(config.encoder)
        in_features = self.obs_encoder.n_tokens * config.encoder.embed_dim
        self.trunk = MLP(
            in_features=in_features,
            out_features=config.hidden,
            num_cells=[config.hidden] * (config.trunk_layers - 1),
            activation_class=nn.GELU,
            activate_last_layer=True,
        )
        self.action_head = nn.Linear(config.hidden, config.chunk_size * config.action_dim)
        self.scale_head = ScaleHead(
            config.hidden,
            (config.chunk_size, config.action_dim),
            hidden=config.scale_hidden,
            min_scale=config.min_scale,
            init_scale=config.init_scale,
        )
        self.in_keys = self.obs_encoder.in_keys
        self.out_keys = [loc_key, scale_key]

    def features(self, tensordict: TensorDictBase) -> torch.Tensor:
        return self.trunk(self.obs_encoder(tensordict).flatten(1))

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        loc = self.action_head(features).unflatten(-1, (self.config.chunk_size, self.config.action_dim))
        return loc.tanh() if self.config.tanh_mean else loc

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return call_flat(tensordict, self._forward, self.out_keys)

    def _forward(self, tensordict: TensorDictBase) -> None:
        feats = self.features(tensordict)
        tensordict.set(self.out_keys[0], self.mean(feats))
        tensordict.set(self.out_keys[1], self.scale_head(feats))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``scale_head`` and ``policy`` (encoders, trunk, action head)."""
        scale = list(self.scale_head.parameters())
        ids = {id(p) for p in scale}
        return {"policy": [p for p in self.parameters() if id(p) not in ids], "scale_head": scale}

    def num_parameters(self) -> dict[str, int]:
        return {
            "obs_encoder": count_parameters(self.obs_encoder),
            "trunk+action_head": count_parameters(self.trunk) + count_parameters(self.action_head),
            "scale_head": count_parameters(self.scale_head),
            "total": count_parameters(self),
        }


def make_regression_actor(policy: TensorDictModuleBase, *, scale_multiplier: float = 1.0, **kwargs) -> ProbabilisticActor:
    """Laplace (``loss="l1"``) or Gaussian (``loss="mse"``) actor over the chunk."""
    return make_continuous_actor(
        policy,
        distribution=policy.config.distribution,
        loc_key=policy.out_keys[0],
        scale_key=policy.out_keys[1],
        scale_multiplier=scale_multiplier,
        **kwargs,
    )


# -- SFT ------------------------------------------------------------------------------
def regression_loss(policy: RegressionPolicy, batch: TensorDictBase, *, mask_key: NestedKey = "action_mask") -> torch.Tensor:
    """L1 (``config.loss="l1"``) or MSE of the mean head on unpadded steps."""
    mask = batch.get(mask_key, None)
    loc = policy.mean(policy.features(batch))
    return masked_l1(loc, batch.get("action"), mask, squared=policy.config.loss == "mse")


def train_regression(policy: RegressionPolicy, batches, *, steps: int = 1000, lr: float = 1e-4, **kwargs) -> list[float]:
    """Mean (action) head + encoders by L1 / MSE; the scale head is untouched."""
    return train_bc(
        policy, lambda b: regression_loss(policy, b), policy.parameter_groups()["policy"], batches,
        steps=steps, lr=lr, desc="regression", **kwargs,
    )


def fit_regression_scale(
    policy: RegressionPolicy,
    batches,
    *,
    steps: int = 500,
    lr: float = 1e-3,
    actor=None,
    max_batches: int = 64,
    progress: bool = True,
) -> list[float]:
    """Scale head by the actor's NLL (Section 4.3), all other weights frozen.

    An endless iterator (e.g. :func:`~torchrl_ript.trainers.sft.batch_iterator`)
    is sampled for ``max_batches`` batches that are then cycled
    (``fit_scale_head`` keeps what it cycles, so an endless source would
    grow without bound).
    """
    actor = actor if actor is not None else make_regression_actor(policy)
    if isinstance(batches, Iterator):
        batches = list(itertools.islice(batches, min(steps, max_batches)))
    was_training = policy.training
    policy.eval()
    try:
        return fit_scale_head(
            actor, policy.scale_head.parameters(), batches, steps=steps, lr=lr,
            mask_key="action_mask", progress=progress,
        )
    finally:
        policy.train(was_training)


def regression_sft(bundle: PolicyBundle, batches, options: SFTOptions) -> dict[str, list[float]]:
    """The SFT recipe of a mean + scale head policy (regression, HF VLA): the
    mean head by L1 (``steps``), then the scale head by NLL (``scale_steps``).

    A fine-tune runs the same: the pretrained scale describes the source tasks.
    """
    network = bundle.network
    history = {"regression": train_regression(network, batches, steps=options.steps, lr=options.lr,
                                              progress=options.progress)}
    history["scale"] = fit_regression_scale(
        network, batches, steps=options.scale_steps, actor=bundle.actor, progress=options.progress
    )
    return history


# -- the "regression" policy kind -----------------------------------------------------------
def _build(spec: BuildSpec) -> RegressionPolicy:
    return RegressionPolicy(
        regression_config(spec.preset, action_dim=spec.action_dim, encoder=spec.encoder(), **spec.overrides)
    )


REGRESSION_KIND = register_policy_kind(PolicyKind(
    name="regression",
    network_class=RegressionPolicy,
    config_class=RegressionConfig,
    build=_build,
    make_actor=make_regression_actor,
    sft=regression_sft,
))
