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
import warnings
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
from torchrl_ript.modules.scale_head import OFT_MAX_SCALE, ScaleHead, check_scale_bounds, fit_scale_head

__all__ = [
    "RegressionConfig",
    "RegressionPolicy",
    "make_regression_actor",
    "regression_config",
    "regression_loss",
    "train_regression",
    "fit_regression_scale",
    "regression_sft",
    "heldout_demo_ids",
    "legacy_scale_config",
    "check_scale_multiplier",
    "scale_head_parameters",
    "REGRESSION_KIND",
]


@dataclass
class RegressionConfig:
    """Sizes and scale options of a :class:`RegressionPolicy` (see :func:`regression_config`).

    The scale head is bounded to ``[min_scale, max_scale]`` (in action units:
    LIBERO's and MetaWorld's actions lie in ``[-1, 1]``, as OFT's normalised
    ones do, and this policy regresses them as they are). The floor matters
    for RIPT: with a scale ``s`` one Laplace dimension's log-prob moves by
    ``|d loc| / s``, so a head fitted down to ``1e-3`` on clean demos (the
    former floor) let one small step of the mean throw most decisions out of
    the PPO clip band. ``max_scale`` defaults to the paper's released OFT
    bound (log-scale ``<= 0.5``: 1.65). ``min_scale`` defaults to ``0.02``,
    not OFT's ``exp(-2) = 0.135``: measured on ``ript_libero`` (small policy,
    10 scripted demos per task, every held-out-fitted dim below 0.135), the
    OFT floor made the sampling policy succeed in 4 of 192 rollouts (0.02,
    against 0.67 with the fitted scale), so RIPT found 4 informative groups in
    24 (``benchmarks/results/signal_audit_ript_libero_oft_floor.json``); at
    ``0.02`` only the rotation dims sit on the floor (held-out fit:
    translation 0.03-0.05, gripper 0.05). Pass ``min_scale=OFT_MIN_SCALE``
    for the paper's bound (the ``hf`` kind's default).
    ``max_scale=None`` is the former unbounded head (``softplus + min_scale``),
    which checkpoints saved before these fields existed are rebuilt with.
    ``scale_multiplier`` multiplies the scale of the distribution that is
    sampled *and* scored (a sampling option: ``set_sampling(net,
    scale_multiplier=...)`` changes it on a trained network).
    """

    action_dim: int = 4
    chunk_size: int = 8
    hidden: int = 64
    trunk_layers: int = 2
    scale_hidden: int = 64
    init_scale: float = 0.1
    min_scale: float = 0.02
    max_scale: float | None = OFT_MAX_SCALE
    scale_multiplier: float = 1.0
    loss: str = "l1"  # "l1" -> Laplace actor, "mse" -> Gaussian actor
    tanh_mean: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}.")
        check_scale_bounds(self.min_scale, self.max_scale, self.init_scale)
        check_scale_multiplier(self.scale_multiplier)

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
            max_scale=config.max_scale,
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


def make_regression_actor(
    policy: TensorDictModuleBase, *, scale_multiplier: float | None = None, **kwargs
) -> ProbabilisticActor:
    """Laplace (``loss="l1"``) or Gaussian (``loss="mse"``) actor over the chunk.

    ``scale_multiplier=None`` (default) reads ``policy.config.scale_multiplier``
    at every call (so ``set_sampling`` changes sampling and scoring at once);
    a number fixes it for this actor.

    Examples:
        >>> from torchrl_ript.models.registry import set_sampling
        >>> net = RegressionPolicy(regression_config("tiny"))
        >>> actor = make_regression_actor(net)
        >>> _ = set_sampling(net, scale_multiplier=2.0)
        >>> actor[-1].distribution_kwargs["scale_multiplier"]
        2.0
    """
    live = scale_multiplier is None and hasattr(policy.config, "scale_multiplier")
    return make_continuous_actor(
        policy,
        distribution=policy.config.distribution,
        loc_key=policy.out_keys[0],
        scale_key=policy.out_keys[1],
        scale_multiplier=1.0 if scale_multiplier is None else scale_multiplier,
        scale_multiplier_source=policy.config if live else None,
        **kwargs,
    )


def check_scale_multiplier(value) -> None:
    """Raise ``ValueError`` unless ``value > 0``."""
    if not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(
            f"scale_multiplier must be > 0 (1.0: the fitted scale), got {value!r}: it multiplies "
            "the scale of the distribution that is sampled and scored."
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


def heldout_demo_ids(count: int, share: float) -> list[int]:
    """The demos (ids ``0 .. count-1``) held out of the mean's fit for the scale fit.

    ``max(1, round(share * count))`` demos spread evenly over the ids (the ids
    run file by file, so several tasks' files each lose about ``share`` of
    their demos); none when ``count < 2`` (one demo cannot be split).

    Examples:
        >>> heldout_demo_ids(20, 0.2), heldout_demo_ids(5, 0.2), heldout_demo_ids(1, 0.2)
        ([2, 7, 12, 17], [2], [])
    """
    if count < 2:
        return []
    n = min(count - 1, max(1, round(share * count)))
    return sorted({int((i + 0.5) * count / n) for i in range(n)})


def _rows(batches, ids: torch.Tensor, *, held: bool) -> Iterator[TensorDictBase]:
    """The rows of each batch whose ``"demo_id"`` is (``held``) or is not in ``ids``,
    regrouped into batches of the source's batch size."""
    parts, size, target = [], 0, None
    for batch in batches:
        target = target or batch.shape[0]
        part = batch[torch.isin(batch.get("demo_id").reshape(-1), ids) == held]
        if part.shape[0]:
            parts.append(part)
            size += part.shape[0]
        if size >= target:
            rows = torch.cat(parts) if len(parts) > 1 else parts[0]
            yield rows[:target]
            rest = rows[target:]
            parts, size = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)


@torch.no_grad()
def _chunk_mean(actor: ProbabilisticActor, batch: TensorDictBase) -> torch.Tensor:
    return actor.get_dist(batch).mode


def regression_sft(bundle: PolicyBundle, batches, options: SFTOptions) -> dict[str, list[float]]:
    """The SFT recipe of a mean + scale head policy (regression, HF VLA): the
    mean head by L1 (``steps``), the scale head by NLL (``scale_steps``).

    ``options.scale_fit="heldout"`` (default): the scale is fitted to the
    errors of a mean on demos it did not see, so it reflects the error on new
    states rather than on the memorised demos (in-sample, the MetaWorld
    drawer-close scale came out ~25% below the held-out error, and LIBERO's
    rotation dims at the 1e-3 floor):

    1. the mean trains on the demos not held out (:func:`heldout_demo_ids`:
       ``scale_holdout`` of them, at least one) for ``(1 - scale_refit)`` of
       ``steps``;
    2. its chunk means on (up to 64 batches of) the held-out demos' rows are
       stored;
    3. the mean trains on all demos for the remaining ``scale_refit`` of
       ``steps`` (the final mean has seen every demo);
    4. the scale head is fitted by NLL, all else frozen, on the held-out rows
       with their residuals from step 2: each target action is shifted by the
       final mean minus the stored one, so the scale head reads the final
       network's features but learns the held-out error.

    Cost: the same gradient steps as in-sample (the mean's ``steps`` are
    split, not added), plus two forward passes over the stored held-out
    batches. The scale it gives is, if anything, conservative (wider): the
    stored residuals come from a mean that saw fewer demos and fewer steps.
    With fewer than 2 demos (or rows without ``"demo_id"``) it warns and fits
    in-sample. ``scale_fit="insample"``: the mean on all demos for ``steps``,
    then the scale on the same demos (the former recipe).

    A fine-tune runs the same: the pretrained scale describes the source tasks.
    """
    network = bundle.network
    batches = batches if isinstance(batches, Iterator) else itertools.cycle(batches)
    first = next(batches)
    batches = itertools.chain([first], batches)
    held = []
    if options.scale_fit == "heldout":
        if "demo_id" not in first.keys() or "demo_count" not in first.keys():
            warnings.warn("scale_fit='heldout' needs rows with 'demo_id' and 'demo_count' "
                          "(trainers.sft.chunk_demo_files writes them): fitting the scale in-sample.")
        else:
            held = heldout_demo_ids(int(first.get("demo_count").reshape(-1)[0]), options.scale_holdout)
            if not held:
                warnings.warn("scale_fit='heldout' needs at least 2 demos to hold one out: fitting the "
                              "scale in-sample on the single demo.")
    if not held:
        history = {"regression": train_regression(network, batches, steps=options.steps, lr=options.lr,
                                                  progress=options.progress)}
        history["scale"] = fit_regression_scale(
            network, batches, steps=options.scale_steps, actor=bundle.actor, progress=options.progress
        )
        return history
    ids = torch.tensor(held)
    refit = round(options.steps * options.scale_refit)
    history = {"regression": train_regression(network, _rows(batches, ids, held=False),
                                              steps=max(1, options.steps - refit), lr=options.lr,
                                              progress=options.progress)}
    was_training = network.training
    network.eval()
    scale_batches = list(itertools.islice(_rows(batches, ids, held=True), min(options.scale_steps, 64)))
    stored = [_chunk_mean(bundle.actor, batch) for batch in scale_batches]
    network.train(was_training)
    if refit:
        history["regression_all"] = train_regression(network, batches, steps=refit, lr=options.lr,
                                                     progress=options.progress)
    network.eval()
    for batch, loc in zip(scale_batches, stored):
        batch.set("action", batch.get("action") - loc + _chunk_mean(bundle.actor, batch))
    network.train(was_training)
    history["scale"] = fit_regression_scale(
        network, scale_batches, steps=options.scale_steps, actor=bundle.actor, progress=options.progress
    )
    return history


# -- the "regression" policy kind -----------------------------------------------------------
def _build(spec: BuildSpec) -> RegressionPolicy:
    return RegressionPolicy(
        regression_config(spec.preset, action_dim=spec.action_dim, encoder=spec.encoder(), **spec.overrides)
    )


def _check_sampling(network, options: dict) -> None:
    if "scale_multiplier" in options:
        check_scale_multiplier(options["scale_multiplier"])


def legacy_scale_config(config: dict) -> dict:
    """A checkpoint's config dict with the scale fields of a checkpoint saved
    before the bounded scale head: no ``max_scale`` key means its weights were
    trained for the unbounded head (``max_scale=None``, ``min_scale`` 1e-3,
    ``init_scale`` 0.1, the former defaults) and are rebuilt so; a
    ``max_scale`` key (even ``None``) is taken as saved.

    Examples:
        >>> legacy_scale_config({"action_dim": 7})
        {'action_dim': 7, 'max_scale': None, 'min_scale': 0.001, 'init_scale': 0.1}
        >>> legacy_scale_config({"max_scale": 1.65})
        {'max_scale': 1.65}
    """
    config = dict(config)
    if "max_scale" not in config:
        config["max_scale"] = None
        config.setdefault("min_scale", 1e-3)
        config.setdefault("init_scale", 0.1)
    return config


def _load(config: dict, state: dict) -> RegressionPolicy:
    network = RegressionPolicy(RegressionConfig(**legacy_scale_config(config)))
    network.load_state_dict(state)
    return network


def scale_head_parameters(network) -> list[nn.Parameter]:
    """The scale head's parameters (the kind's :attr:`PolicyKind.scale_parameters`)."""
    return list(network.scale_head.parameters())


REGRESSION_KIND = register_policy_kind(PolicyKind(
    name="regression",
    network_class=RegressionPolicy,
    config_class=RegressionConfig,
    build=_build,
    make_actor=make_regression_actor,
    sft=regression_sft,
    sampling_fields=("scale_multiplier",),
    check_sampling=_check_sampling,
    load=_load,
    scale_parameters=scale_head_parameters,
))
