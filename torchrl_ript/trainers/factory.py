"""Build the RIPT pieces from a :class:`~torchrl_ript.config.RIPTConfig`.

Examples stay thin: they build an env factory, a policy and the context sets,
and this wires collector, loss, optimiser, schedule, evaluation and logger.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from tensordict.nn import TensorDictModuleBase
from torchrl.envs import AsyncEnvPool, EnvBase, ExcludeTransform, TransformedEnv
from torchrl.envs.utils import ExplorationType
from torchrl.record.loggers import Logger, get_logger

from torchrl_ript.collectors.distributed import RayGroupCollector
from torchrl_ript.collectors.group import GroupCollector
from torchrl_ript.config import RIPTConfig, validate_ript_config
from torchrl_ript.data.context import ContextDataset
from torchrl_ript.models.registry import scale_parameters
from torchrl_ript.modules.actors import score_per_action
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss
from torchrl_ript.trainers.ddp import DistributedContext, RankCollector
from torchrl_ript.trainers.evaluate import evaluate_success
from torchrl_ript.trainers.optim import make_optimizer, make_scheduler
from torchrl_ript.trainers.ript import RIPTTrainer

__all__ = [
    "COLLECTOR_DEFAULTS",
    "make_batched_env",
    "make_collector",
    "make_group_collector",
    "make_logger",
    "make_policy_trainer",
    "make_ript_trainer",
]


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
        trajs_per_batch=config.trajs_per_batch if trajs_per_batch is None else trajs_per_batch,
        max_frames_per_traj=config.max_decisions,
        max_context_draws=config.max_context_draws if max_context_draws is None else max_context_draws,
        dynamic_sampling=config.dynamic_sampling,
        keep_in_flight=config.keep_in_flight,
        max_staleness=config.max_staleness,
        lockstep=config.lockstep,
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
    eval_seed: int | None = None,
    progress: bool = True,
    collector=None,
    distributed=None,
) -> RIPTTrainer:
    """Wire a :class:`RIPTTrainer` (collector, loss, optimiser, schedule, eval).

    ``actor`` is scored by the loss; ``policy`` (default: the actor) is what
    the collector runs, e.g. the actor followed by a token decoder. The scale
    head of a registered continuous policy inside ``actor``
    (:func:`~torchrl_ript.models.registry.scale_parameters`) is set to
    ``requires_grad=config.train_scale``: frozen by default, so the optimiser
    leaves it out. ``config.ratio="action"`` switches ``actor`` to per-action
    scoring (:func:`~torchrl_ript.modules.score_per_action`, in place), before
    any rollout is collected.
    ``eval_exploration_type`` is how the periodic evaluation acts: the mode
    (default) or the sampling policy (``ExplorationType.RANDOM``);
    ``eval_seed`` seeds its random draws (the same numbers at every
    evaluation, and training's random stream untouched; see
    :func:`~torchrl_ript.trainers.evaluate.evaluate_success`).
    ``collector`` replaces the default ``GroupCollector`` over ``env`` (e.g.
    Ray workers or a DDP rank's share, from
    :func:`make_collector`); ``distributed`` is the
    rank's :class:`~torchrl_ript.trainers.ddp.DistributedContext` under
    ``torchrun``.
    """
    validate_ript_config(config)
    policy = actor if policy is None else policy
    if collector is None:
        if env is None:
            raise ValueError("make_ript_trainer needs env= (or a ready collector=).")
        collector = make_group_collector(config, env, policy, train_contexts, sampled_action_key=sampled_action_key)
    # the scale head (a registered kind's scale_parameters) trains only when asked
    for param in scale_parameters(actor):
        param.requires_grad_(bool(config.train_scale))
    loss = RIPTClipPPOLoss(actor, clip_epsilon=config.clip_epsilon, ratio=config.ratio,
                           loss_reduction=config.loss_reduction)
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
                exploration_type=eval_exploration_type, lockstep=config.lockstep, seed=eval_seed,
                progress=progress,
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
        target_kl=config.target_kl,
        null_advantages=config.null_advantages,
        update_threads=config.update_threads,
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


# -- the collector switch of the examples -----------------------------------------
#: keys of an example's ``collector:`` config section
COLLECTOR_DEFAULTS = {
    "backend": "local",  # local | ray
    "num_workers": 2,  # Ray rollout workers (backend=ray)
    "ray_address": None,  # an existing cluster ("auto", "ip:6379"); default: start a local one
    "envs_per_worker": None,  # env slots per Ray worker; default: K (one group at a time)
    "cpus_per_worker": 1,
    "gpus_per_worker": 0,
    "max_policy_lag": 0,  # 0: on-policy batches; 1: workers keep collecting during the update
    "ddp_collect": None,  # under torchrun: per_rank (local default) | rank0 (ray default)
}


def make_collector(
    config,
    options: Mapping | None,
    *,
    env_fn,
    policy,
    train_contexts,
    sampled_action_key: str = "action",
    parallel: bool = True,
    distributed: DistributedContext | None = None,
):
    """The collector an example's ``collector:`` section asks for, or ``None``.

    ``None`` means "the default": ``backend="local"`` in one process, where
    :func:`make_ript_trainer` builds its
    :class:`~torchrl_ript.collectors.GroupCollector` over the example's env
    pool as before. ``backend="ray"`` gives a
    :class:`~torchrl_ript.collectors.RayGroupCollector` with ``num_workers``
    remote GroupCollectors, each over ``envs_per_worker`` (default K) copies
    of ``env_fn`` in a :func:`make_batched_env`
    pool (processes when ``parallel``, as rendering envs need). Under ``torchrun``
    (``distributed`` given) the collector is wrapped in a
    :class:`~torchrl_ript.trainers.ddp.RankCollector`: with ``ddp_collect="per_rank"`` each rank collects
    ``B / G`` rollouts with its own seed (``config.num_envs`` env slots per
    rank), with ``"rank0"`` rank 0 collects all B and scatters. See
    :data:`COLLECTOR_DEFAULTS` for the options.

    Examples:
        >>> import torch
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> from torchrl_ript.config import RIPTConfig
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> actor, _ = toy_laplace_actor()
        >>> contexts = ContextDataset(torch.rand(8, 2) - 0.5, [0] * 8, ["track"], seed=0)
        >>> config = RIPTConfig(group_size=4, trajs_per_batch=8, minibatch_size=4, num_envs=4,
        ...                     max_decisions=3)
        >>> make_collector(config, {"backend": "local"}, env_fn=ContextToyVLAEnv, policy=actor,
        ...                train_contexts=contexts) is None  # the default collector
        True
        >>> from torchrl_ript.trainers.ddp import DistributedContext
        >>> ctx = DistributedContext(rank=0, world_size=1)  # a 1-rank "torchrun" job
        >>> collector = make_collector(config, {"backend": "local"}, env_fn=ContextToyVLAEnv,
        ...                            policy=actor, train_contexts=contexts, parallel=False,
        ...                            distributed=ctx)
        >>> type(collector.collector).__name__, collector.collector.trajs_per_batch
        ('GroupCollector', 8)
        >>> batch = next(iter(collector))
        >>> batch.shape, collector.last_stats.rollouts_kept
        (torch.Size([8]), 8)
        >>> collector.shutdown()
    """
    if config.ratio == "action":  # the collectors record per-action log-probs (Ray ships the policy now)
        score_per_action(policy)
    opts = dict(COLLECTOR_DEFAULTS)
    unknown = set(options or {}) - set(opts)
    if unknown:
        raise KeyError(f"unknown collector options {sorted(unknown)}; valid: {sorted(opts)}.")
    opts.update(dict((options or {}).items()))
    backend = opts["backend"]
    if backend not in ("local", "ray"):
        raise ValueError(f"collector.backend must be 'local' or 'ray', got {backend!r}.")
    world = distributed.world_size if distributed is not None else 1
    rank = distributed.rank if distributed is not None else 0
    mode = opts["ddp_collect"] or ("rank0" if backend == "ray" else "per_rank")
    if mode not in ("per_rank", "rank0"):
        raise ValueError(f"collector.ddp_collect must be 'per_rank' or 'rank0', got {mode!r}.")
    K, B = config.group_size, config.trajs_per_batch
    per_rank = distributed is not None and mode == "per_rank"
    if per_rank and B % (world * K):
        raise ValueError(
            f"ript.trajs_per_batch={B} must split into {world} ranks of whole groups of K={K}: "
            f"use a multiple of {world * K} (e.g. {world * K * max(1, B // (world * K))})."
        )
    if distributed is not None and config.minibatch_size % world:
        raise ValueError(
            f"ript.minibatch_size={config.minibatch_size} (rows per gradient step, all ranks "
            f"together) must be a multiple of the {world} ranks."
        )
    if backend == "local" and distributed is None:
        return None
    batch = B // world if per_rank else B
    seed = config.seed
    collector = None
    if backend == "local" and (per_rank or rank == 0):
        draws = config.max_context_draws
        if per_rank and draws is not None:
            draws = max(batch // K, draws // world)
        collector = make_group_collector(
            config, make_batched_env(env_fn, config.num_envs, parallel=parallel), policy, train_contexts,
            sampled_action_key=sampled_action_key, trajs_per_batch=batch, max_context_draws=draws,
            # under DDP, the rank is the worker index: own context stream, disjoint group ids
            worker_idx=rank if per_rank else None,
        )
    elif backend == "ray" and (per_rank or rank == 0):
        envs = opts["envs_per_worker"] or K
        workers = int(opts["num_workers"])
        cpus = opts["cpus_per_worker"]
        collector = RayGroupCollector(
            # the example's own kind of env pool (rendering envs need processes)
            partial(make_batched_env, env_fn, envs, parallel=parallel),
            policy,
            context_dataset=train_contexts,
            group_size=K,
            trajs_per_batch=batch,
            max_frames_per_traj=config.max_decisions,
            max_context_draws=config.max_context_draws,
            dynamic_sampling=config.dynamic_sampling,
            lockstep=config.lockstep,
            num_workers=workers,
            seed=seed,
            ray_address=opts["ray_address"],
            num_cpus_per_worker=cpus,
            num_gpus_per_worker=opts["gpus_per_worker"] or None,
            max_policy_lag=int(opts["max_policy_lag"]),
            stream_offset=rank * 1024,  # per_rank: each rank's workers own their streams and ids
        ).set_keys(sampled_action=sampled_action_key)
    if distributed is None:
        return collector
    return RankCollector(collector, distributed, mode=mode)


def make_policy_trainer(
    config: RIPTConfig,
    *,
    bundle,
    env_fn: Callable[[], EnvBase],
    make_env: Callable[[], EnvBase],
    train_contexts: ContextDataset,
    collector_options: Mapping | None,
    distributed: DistributedContext | None = None,
    **trainer_options,
) -> RIPTTrainer:
    """The collector and trainer of a policy bundle (``PolicyBundle``: actor,
    policy, sampled-action key), as the examples' RIPT stage and the signal
    audit build them: :func:`make_collector` from ``collector_options`` (an
    example's ``collector:`` section), else the default collector over
    ``make_env()``, then :func:`make_ript_trainer` with ``trainer_options``
    (``eval_env``, ``eval_contexts``, ``logger``, ``checkpoint_dir``,
    ``eval_exploration_type``, ``eval_seed``, ``progress``; ``eval_env`` defaults to none).

    Examples:
        >>> import torch
        >>> from functools import partial
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript.envs.toy import ContextToyVLAEnv
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> from torchrl_ript.models.registry import PolicyBundle
        >>> actor, _ = toy_laplace_actor()
        >>> bundle = PolicyBundle(kind="toy", network=actor, actor=actor, policy=actor, sampled_key="action", n_exec=1)
        >>> env_fn = partial(ContextToyVLAEnv, action_dim=2, max_steps=4)
        >>> contexts = ContextDataset(torch.rand(8, 2) - 0.5, [0] * 8, ["track"], seed=0)
        >>> trainer = make_policy_trainer(RIPTConfig(group_size=2, trajs_per_batch=4, minibatch_size=4,
        ...     num_steps=1, max_decisions=4), bundle=bundle, env_fn=env_fn, make_env=lambda: SerialEnv(2, env_fn),
        ...     train_contexts=contexts,
        ...     collector_options=None, progress=False)
        >>> type(trainer.collector).__name__
        'GroupCollector'
        >>> trainer.collector.shutdown()
    """
    collector = make_collector(config, collector_options, env_fn=env_fn, policy=bundle.policy,
                               train_contexts=train_contexts, sampled_action_key=bundle.sampled_key,
                               distributed=distributed)
    trainer_options.setdefault("eval_env", None)
    return make_ript_trainer(
        config, env=make_env() if collector is None else None, collector=collector, distributed=distributed,
        actor=bundle.actor, policy=bundle.policy, sampled_action_key=bundle.sampled_key,
        train_contexts=train_contexts, **trainer_options,
    )
