"""Build the RIPT pieces from a :class:`~torchrl_ript.config.RIPTConfig`.

Examples stay thin: they build an env factory, a policy and the context sets,
and this wires collector, loss, optimiser, schedule, evaluation and logger.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tensordict.nn import TensorDictModuleBase
from torchrl.envs import AsyncEnvPool, EnvBase, ExcludeTransform, TransformedEnv
from torchrl.envs.utils import ExplorationType
from torchrl.record.loggers import Logger, get_logger

from torchrl_ript.collectors.group import GroupCollector
from torchrl_ript.config import RIPTConfig, validate_ript_config
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss
from torchrl_ript.trainers.evaluate import evaluate_success
from torchrl_ript.trainers.optim import make_optimizer, make_scheduler
from torchrl_ript.trainers.ript import RIPTTrainer

__all__ = ["make_batched_env", "make_group_collector", "make_logger", "make_ript_trainer"]


def make_batched_env(
    env_fn: Callable[[], EnvBase],
    num_envs: int,
    *,
    parallel: bool = True,
    instruction_key: str | None = "language_instruction",
) -> AsyncEnvPool:
    """The env slots rollouts and evaluations run on: TorchRL's :class:`~torchrl.envs.AsyncEnvPool`.

    ``num_envs`` worker processes (TorchRL starts them with ``spawn``: GL
    contexts do not survive a fork), or, with ``parallel=False``, threads of
    this process: only for envs without thread-bound resources (a MuJoCo EGL
    context must stay in the thread that made it, so rendering envs need
    processes). One pool can serve the collector and the evaluations in turn
    (each run leaves it idle).

    The workers drop the env's per-step ``instruction_key`` output (TorchRL's
    ``ExcludeTransform``): a string is not a tensor, and without it the pool
    exchanges every step through shared memory instead of pickling it through
    a queue (``benchmarks/README.md``: 1.2-1.5x the decisions per second on
    MetaWorld). The rollout engine then gives the policy the instruction of
    each rollout's context (:meth:`ContextDataset.instruction`).
    ``instruction_key=None`` keeps the env's outputs as they are.

    Examples:
        >>> from functools import partial
        >>> from torchrl_ript import ContextToyVLAEnv
        >>> pool = make_batched_env(partial(ContextToyVLAEnv, action_dim=2), 2)
        >>> pool.resolved_exchange, "language_instruction" in pool.observation_spec.keys()
        ('shm', False)
        >>> pool.close()
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    if not parallel:
        return AsyncEnvPool([env_fn] * num_envs, backend="threading")
    if instruction_key is not None:
        env_fn = partial(_without_key, env_fn, instruction_key)
    return AsyncEnvPool([env_fn] * num_envs, backend="multiprocessing", exchange="auto")


def _without_key(env_fn: Callable[[], EnvBase], key: str) -> EnvBase:
    env = env_fn()
    if key not in env.observation_spec.keys(True, True):
        return env
    return TransformedEnv(env, ExcludeTransform(key))


def make_group_collector(
    config: RIPTConfig,
    env: EnvBase,
    policy,
    train_contexts: ContextDataset,
    *,
    sampled_action_key: str = "action",
    trajs_per_batch: int | None = None,
    max_context_draws: int | None = None,
    worker_idx: int | None = None,
) -> GroupCollector:
    """The :class:`GroupCollector` a :class:`RIPTConfig` describes, over ``env``.

    ``trajs_per_batch`` / ``max_context_draws`` default to the config's (a DDP
    rank collects its share with its own ``worker_idx`` stream).
    """
    return GroupCollector(
        env,
        policy,
        context_dataset=train_contexts,
        group_size=config.group_size,
        trajs_per_batch=config.batch_size if trajs_per_batch is None else trajs_per_batch,
        max_frames_per_traj=config.max_decisions,
        max_context_draws=config.max_context_draws if max_context_draws is None else max_context_draws,
        dynamic_sampling=config.dynamic_sampling,
        keep_in_flight=config.keep_in_flight,
        max_staleness=config.max_staleness,
        seed=config.seed,
        worker_idx=worker_idx,
    ).set_keys(sampled_action=sampled_action_key)


def make_logger(kind: str, log_dir: str | Path, name: str, **kwargs) -> Logger | None:
    """A TorchRL logger: ``"csv"`` (default), ``"tensorboard"``, ``"wandb"`` or ``"none"``."""
    if kind in (None, "", "none"):
        return None
    return get_logger(kind, logger_name=str(log_dir), experiment_name=name, **kwargs)


def make_ript_trainer(
    config: RIPTConfig,
    *,
    env: EnvBase | None,
    eval_env: EnvBase | None,
    actor,
    policy: TensorDictModuleBase | None = None,
    sampled_action_key: str = "action",
    train_contexts: ContextDataset,
    eval_contexts: ContextDataset | None = None,
    logger: Logger | None = None,
    checkpoint_dir: str | Path | None = None,
    eval_exploration_type: ExplorationType = ExplorationType.DETERMINISTIC,
    progress: bool = True,
    collector=None,
    distributed=None,
) -> RIPTTrainer:
    """Wire a :class:`RIPTTrainer` (collector, loss, optimiser, schedule, eval).

    ``actor`` is scored by the loss; ``policy`` (default: the actor) is what
    the collector runs, e.g. the actor followed by a token decoder.
    ``eval_exploration_type`` is how the periodic evaluation acts: the mode
    (default) or the sampling policy (``ExplorationType.RANDOM``).
    ``collector`` replaces the default ``GroupCollector`` over ``env`` (e.g.
    Ray workers or a DDP rank's share, from
    :func:`torchrl_ript.trainers.ddp.make_collector`); ``distributed`` is the
    rank's :class:`~torchrl_ript.trainers.ddp.DistributedContext` under
    ``torchrun``.
    """
    validate_ript_config(config)
    policy = actor if policy is None else policy
    if collector is None:
        if env is None:
            raise ValueError("make_ript_trainer needs env= (or a ready collector=).")
        collector = make_group_collector(config, env, policy, train_contexts, sampled_action_key=sampled_action_key)
    loss = RIPTClipPPOLoss(actor, clip_epsilon=config.clip_epsilon, ratio=config.ratio)
    loss.set_keys(action=sampled_action_key)
    optimizer = make_optimizer(actor, lr=config.lr, param_lrs=config.param_lrs)
    scheduler = make_scheduler(
        optimizer, kind=config.scheduler, total_steps=config.num_steps,
        warmup_steps=config.warmup_steps,
    )
    evaluate = None
    if eval_env is not None and eval_contexts is not None:

        def evaluate():
            return evaluate_success(
                eval_env, policy, eval_contexts, horizon=config.max_decisions,
                exploration_type=eval_exploration_type, progress=progress,
            )

    if checkpoint_dir is not None and (distributed is None or distributed.is_main):
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / "config.json").write_text(json.dumps(config.as_dict(), indent=1))
    return RIPTTrainer(
        collector=collector,
        loss=loss,
        optimizer=optimizer,
        num_steps=config.num_steps,
        ppo_epochs=config.ppo_epochs,
        minibatch_size=config.minibatch_size,
        max_grad_norm=config.max_grad_norm,
        scheduler=scheduler,
        evaluate=evaluate,
        eval_every=config.eval_every,
        logger=logger,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        seed=config.seed,
        config=config.as_dict(),
        distributed=distributed,
    )
