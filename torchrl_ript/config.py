"""RIPT hyper-parameters, their checks, and the paper's presets.

Hydra examples load YAML into these fields; :func:`validate_ript_config` runs
before anything is built so a bad value fails in a second with a message that
names the fix, instead of after an hour of rollouts.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

__all__ = ["RIPTConfig", "ConfigError", "check_group_sizes", "check_target_kl", "check_update_threads", "validate_ript_config",
           "PAPER_PRESETS"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says how to fix it."""


def context_draw_limit(max_context_draws: int | None, trajs_per_batch: int, group_size: int) -> int:
    """Contexts a step may draw at most: ``max_context_draws``, by default 10 B/K.

    Examples:
        >>> context_draw_limit(None, 32, 8), context_draw_limit(6, 32, 8)
        (40, 6)
    """
    return int(max_context_draws) if max_context_draws is not None else 10 * int(trajs_per_batch) // int(group_size)


def check_group_sizes(
    group_size: int,
    trajs_per_batch: int | None = None,
    *,
    max_context_draws: int | None = None,
) -> None:
    """The one check of K (``group_size``), B (``trajs_per_batch``) and the draw guard.

    Used by :func:`validate_ript_config`, the collector and the advantage
    transform, so the rules and their messages are the same everywhere.

    Examples:
        >>> check_group_sizes(8, 24)
        >>> check_group_sizes(8, 20)
        Traceback (most recent call last):
        ...
        torchrl_ript.config.ConfigError: trajs_per_batch (B=20) must be a multiple of group_size (K=8): try trajs_per_batch=16 or 24.
    """
    k = int(group_size)
    if k < 2:
        raise ConfigError(
            f"group_size (K={group_size}) must be >= 2: the leave-one-out baseline "
            "needs at least one other rollout of the same context."
        )
    if trajs_per_batch is None:
        return
    b = int(trajs_per_batch)
    if b < k or b % k:
        low = max(k, b // k * k)
        raise ConfigError(
            f"trajs_per_batch (B={trajs_per_batch}) must be a multiple of group_size "
            f"(K={group_size}): try trajs_per_batch={low} or {low + k}."
        )
    if max_context_draws is not None and int(max_context_draws) < b // k:
        raise ConfigError(
            f"max_context_draws={max_context_draws} cannot fill B={b} with groups of "
            f"K={k}: use at least {b // k}."
        )


def check_update_threads(update_threads) -> None:
    """The one check of ``update_threads`` (the config's and the trainer's): ``None`` or an integer >= 1.

    Examples:
        >>> check_update_threads(None), check_update_threads(2)
        (None, None)
        >>> check_update_threads(0)
        Traceback (most recent call last):
        ...
        torchrl_ript.config.ConfigError: update_threads must be an integer >= 1 or null (the process's setting), got 0.
    """
    if update_threads is not None and (isinstance(update_threads, bool) or not isinstance(update_threads, int)
                                       or update_threads < 1):
        raise ConfigError(f"update_threads must be an integer >= 1 or null (the process's setting), got "
                          f"{update_threads!r}.")


def check_target_kl(target_kl) -> None:
    """The one check of ``target_kl`` (the config's and the trainer's): ``None`` (off) or a number > 0.

    Examples:
        >>> check_target_kl(None), check_target_kl(0.005)
        (None, None)
        >>> check_target_kl(0.0)
        Traceback (most recent call last):
        ...
        torchrl_ript.config.ConfigError: target_kl must be > 0 or null (off), got 0.0.
    """
    if target_kl is not None and (isinstance(target_kl, bool) or not isinstance(target_kl, (int, float))
                                  or not target_kl > 0):
        raise ConfigError(f"target_kl must be > 0 or null (off), got {target_kl!r}.")


@dataclass
class RIPTConfig:
    """The knobs of Algorithm 1.

    Attributes:
        group_size: K, rollouts per context (>= 2).
        trajs_per_batch: B, informative rollouts per step (a multiple of K).
        num_steps: M, RIPT steps.
        ppo_epochs: N, passes over each batch.
        minibatch_size: trajectories per gradient step.
        lr: learning rate of the policy (``param_lrs`` overrides by name).
        param_lrs: ``{regex: lr}`` per parameter group (e.g. LoRA vs head).
        clip_epsilon: PPO clip.
        max_grad_norm: gradient clipping (``None`` = off).
        target_kl: stop a step's PPO epochs once an epoch's mean per-decision
            KL estimate passes it (``None`` = off; see ``RIPTTrainer``).
        null_advantages: a control run on random-sign advantages (the signal
            audit's null every step; see ``RIPTTrainer``): how far the recipe
            moves held-out success without the reward.
        update_threads: torch intra-op threads during a step's PPO epochs
            (``None`` = the process's setting). The env workers wait for the
            next batch then, so the update may use the cores that collection
            and evaluation leave to them (see ``RIPTTrainer``).
        ratio: ``"trajectory"`` (Eq. 8), ``"step"`` (one ratio per decision) or
            ``"action"`` (continuous chunk policies: one ratio per action of a
            decision's chunk, its log-prob summed over the action dims only;
            see ``RIPTClipPPOLoss``).
        train_scale: let RIPT's optimiser update the policy's scale head
            (the kind's ``PolicyKind.scale_parameters``). Default ``False``: the
            scale fitted at SFT stays fixed during RIPT (as the paper's OFT
            code does), so the ratio's width cannot shrink under the update.
        loss_reduction: with ``ratio="step"``/``"action"``, the objective's mean over
            decisions (``"decision"``) or over trajectories (``"trajectory"``:
            each trajectory's decisions first; see ``RIPTClipPPOLoss``).
        dynamic_sampling: reject all-equal groups (Section 4.2).
        max_context_draws: contexts drawn per step at most (``None`` = 10 B/K).
        max_decisions: decision steps per rollout at most.
        num_envs: parallel env workers (env slots; more than the cores is an
            option, measured faster with ``keep_in_flight``: ``benchmarks/README.md``).
        keep_in_flight: rollouts still running when a batch is complete carry
            into the next batch instead of being discarded.
        max_staleness: carried rollouts at most this many policy versions old.
        lockstep: env slots step with a barrier during collection and
            evaluation, so a stochastic policy sees the same batches whatever the
            envs' timing: the same seed and command give bitwise the same run
            (and a resumed run equals an uninterrupted one). Costs the
            free-running slots' throughput (README, "Reproducible runs").
        eval_every: evaluate every this many steps.
        scheduler: ``"constant"`` or ``"cosine"``; ``warmup_steps`` before it.
        seed: global seed.
    """

    group_size: int = 16
    trajs_per_batch: int = 160
    num_steps: int = 15
    ppo_epochs: int = 20
    minibatch_size: int = 8
    lr: float = 1e-6
    param_lrs: dict | None = None
    clip_epsilon: float = 0.2
    max_grad_norm: float | None = 1.0
    target_kl: float | None = None
    null_advantages: bool = False
    update_threads: int | None = None
    ratio: str = "trajectory"
    train_scale: bool = False
    loss_reduction: str = "decision"
    dynamic_sampling: bool = True
    max_context_draws: int | None = None
    max_decisions: int = 64
    num_envs: int = 2
    keep_in_flight: bool = False
    max_staleness: int = 1
    lockstep: bool = False
    eval_every: int = 1
    scheduler: str = "constant"
    warmup_steps: int = 0
    seed: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping) -> RIPTConfig:
        """Build from a dict/DictConfig, rejecting unknown keys."""
        values = dict(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown RIPT option(s) {unknown}; valid options: {sorted(known)}."
            )
        config = cls(**values)
        validate_ript_config(config)
        return config

    def as_dict(self) -> dict:
        return asdict(self)


# Section 5.1 and the official code's configs (QueST single-task; OFT).
PAPER_PRESETS = {
    "quest": dict(group_size=16, trajs_per_batch=160, ppo_epochs=20, minibatch_size=8, lr=1e-6,
                  clip_epsilon=0.2, max_grad_norm=1.0),
    "openvla_oft": dict(group_size=8, trajs_per_batch=192, ppo_epochs=1, minibatch_size=4, lr=1e-4,
                        clip_epsilon=0.1, max_grad_norm=1.0,
                        param_lrs={"lora_": 1e-4, "action_head": 1e-5}),
}


def validate_ript_config(config: RIPTConfig) -> RIPTConfig:
    """Raise :class:`ConfigError` for values that cannot work.

    Examples:
        >>> validate_ript_config(RIPTConfig(group_size=8, trajs_per_batch=24))  # doctest: +ELLIPSIS
        RIPTConfig(group_size=8, trajs_per_batch=24, ...)
        >>> validate_ript_config(RIPTConfig(group_size=8, trajs_per_batch=20))
        Traceback (most recent call last):
        ...
        torchrl_ript.config.ConfigError: trajs_per_batch (B=20) must be a multiple of group_size (K=8): try trajs_per_batch=16 or 24.
    """
    c = config
    check_group_sizes(c.group_size, c.trajs_per_batch, max_context_draws=c.max_context_draws)
    for name in ("num_steps", "ppo_epochs", "minibatch_size", "max_decisions", "num_envs",
                 "eval_every"):
        value = getattr(c, name)
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}.")
    if c.warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {c.warmup_steps}.")
    if c.max_staleness < 0:
        raise ConfigError(f"max_staleness must be >= 0, got {c.max_staleness}.")
    if c.lr <= 0:
        raise ConfigError(f"lr must be > 0, got {c.lr}.")
    if not 0 < c.clip_epsilon < 1:
        raise ConfigError(f"clip_epsilon must be in (0, 1), got {c.clip_epsilon} (paper: 0.2 / 0.1).")
    if c.max_grad_norm is not None and c.max_grad_norm <= 0:
        raise ConfigError(f"max_grad_norm must be > 0 or null, got {c.max_grad_norm}.")
    if c.ratio not in ("trajectory", "step", "action"):
        raise ConfigError(f"ratio must be 'trajectory', 'step' or 'action', got {c.ratio!r}.")
    if c.loss_reduction not in ("decision", "trajectory"):
        raise ConfigError(f"loss_reduction must be 'decision' or 'trajectory', got {c.loss_reduction!r}.")
    check_target_kl(c.target_kl)
    check_update_threads(c.update_threads)
    if c.scheduler not in ("constant", "cosine"):
        raise ConfigError(f"scheduler must be 'constant' or 'cosine', got {c.scheduler!r}.")
    if c.minibatch_size > c.trajs_per_batch:
        raise ConfigError(
            f"minibatch_size={c.minibatch_size} exceeds trajs_per_batch={c.trajs_per_batch}: "
            "lower it (the paper uses 8 for QueST, 4 for OFT)."
        )
    return c
