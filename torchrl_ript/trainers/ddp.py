"""Data-parallel RIPT learners under ``torchrun`` (``torch.distributed``).

``torchrun --nproc_per_node=G script.py`` starts G copies of a script; each
calls :func:`init_distributed` and gets a :class:`DistributedContext` (gloo on
CPU, NCCL on GPU). :class:`~torchrl_ript.trainers.RIPTTrainer` then

- trains each rank on its share (B/G rows) of the global batch of B
  informative trajectories, with ``minibatch_size / G`` rows per rank per
  gradient step, so a global minibatch is the same size as in one process;
- averages the gradients of every step across ranks with one all-reduce
  (weighted by rows, so unequal shares still give the global-mean gradient);
- evaluates, logs and writes checkpoints on rank 0 only, and restores every
  rank from rank 0's checkpoint (each rank keeps its own RNG streams).

Where the rows come from is the collector's job (:class:`RankCollector`):
each rank collects its share with its own seeded context stream
(``"per_rank"``, the default for in-process env pools: G ranks simulate in
parallel), or rank 0 collects all B (e.g. from Ray workers) and scatters
(``"rank0"``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.collectors import BaseCollector
from tqdm.auto import tqdm

from torchrl_ript.collectors.distributed import merge_collection_stats

__all__ = [
    "DistributedContext",
    "RankCollector",
    "init_distributed",
    "make_collector",
    "optimise_distributed",
    "COLLECTOR_DEFAULTS",
]


@dataclass
class DistributedContext:
    """Where this process sits in a ``torch.distributed`` job.

    Attributes:
        rank, world_size, local_rank: as set by ``torchrun``.
        device: the device this rank trains on (``cuda:<local_rank>`` with NCCL).
        backend: ``"gloo"`` or ``"nccl"``.
    """

    rank: int
    world_size: int
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (every rank must call them, in the same order) -----------
    def all_reduce_gradients(self, params: Sequence[nn.Parameter], *, weight: float = 1.0) -> None:
        """Replace each ``param.grad`` by the sum over ranks of ``weight * grad`` / world size.

        One flat all-reduce per call; a parameter without a gradient on a
        rank contributes zeros (it gets a gradient tensor afterwards).
        ``weight`` rescales this rank's contribution (see
        :meth:`share_weight`).

        Examples:
            >>> ctx = DistributedContext(rank=0, world_size=1)
            >>> p = nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
            >>> ctx.all_reduce_gradients([p]); p.grad
            tensor([3., 3.])
        """
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ])
        if weight != 1.0:
            flat.mul_(weight)
        if self.world_size > 1:
            # NCCL reduces CUDA tensors only (a CPU-resident model under NCCL goes via the GPU)
            moved = flat.to(self.device) if self.backend == "nccl" and flat.device.type != "cuda" else flat
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            moved.div_(self.world_size)
            flat = moved.to(flat.device) if moved is not flat else flat
        offset = 0
        for p in params:
            n = p.numel()
            grad = flat[offset : offset + n].view_as(p)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
            offset += n

    @staticmethod
    def share_weight(local_rows: int, all_rows: Sequence[int]) -> float:
        """Weight of a rank's mean loss so that averaged gradients equal the global mean.

        With ``r_i`` rows on rank ``i`` and ``R`` rows in all, the global-mean
        gradient is ``sum_i (r_i / R) g_i = mean_i (G r_i / R) g_i``.

        Examples:
            >>> DistributedContext.share_weight(4, [4, 4]), DistributedContext.share_weight(2, [2, 6])
            (1.0, 0.5)
        """
        total = sum(all_rows)
        return len(all_rows) * local_rows / total if total else 0.0

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order (pickled; for small objects)."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj, *, src: int = 0):
        """``obj`` of rank ``src`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def scatter_object(self, chunks: Sequence | None, *, src: int = 0):
        """Rank ``src`` passes one object per rank; each rank gets its own."""
        if self.world_size == 1:
            return chunks[0]
        out = [None]
        dist.scatter_object_list(out, list(chunks) if self.rank == src else None, src=src)
        return out[0]

    def mean_scalars(self, values: Mapping[str, float]) -> dict[str, float]:
        """Average a dict of floats (same keys on every rank) across ranks."""
        keys = sorted(values)
        if self.world_size == 1 or not keys:
            return dict(values)
        vec = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if self.backend == "nccl":
            vec = vec.to(self.device)
        dist.all_reduce(vec, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, vec.cpu().tolist())}

    def broadcast_module(self, module: nn.Module, *, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers into ``module`` on every rank."""
        if self.world_size == 1:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if self.backend == "nccl" and tensor.device.type != "cuda":
                    moved = tensor.to(self.device)
                    dist.broadcast(moved, src=src)
                    tensor.copy_(moved.to(tensor.device))
                else:
                    dist.broadcast(tensor.data, src=src)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def shutdown(self) -> None:
        """Destroy the process group (call once at the end of the script)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(
    *, backend: str | None = None, timeout_s: float = 7200.0
) -> DistributedContext | None:
    """Join the ``torchrun`` job this process was started in, or return ``None``.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``);
    without them, or with ``WORLD_SIZE=1``, the script runs as one process
    and this returns ``None``. The backend defaults to NCCL when CUDA is
    available and gloo otherwise. ``timeout_s`` bounds every collective:
    ranks wait for rank 0 while it evaluates, so keep it above the longest
    evaluation.

    Examples:
        >>> import os
        >>> "WORLD_SIZE" in os.environ or init_distributed() is None
        True
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend='nccl' needs CUDA GPUs; use backend='gloo' on CPU.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    if dist.get_world_size() != world_size:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but the process group has {dist.get_world_size()} ranks."
        )
    return DistributedContext(rank, world_size, local_rank, device, backend)


def optimise_distributed(trainer, batch: TensorDictBase) -> dict:
    """The PPO epochs of :class:`~torchrl_ript.trainers.RIPTTrainer` on this rank's share.

    Every rank takes the same number of gradient steps, each with one
    all-reduce of the gradients; a rank's share of a step is weighted by its
    rows, so the averaged gradient is the mean over the global minibatch even
    when the shares differ (a rank short of informative groups). Clipping and
    the optimiser step then see identical gradients on every rank, which keeps
    the weights identical. Returns the trainer's record (losses averaged over
    ranks).
    """
    ctx = trainer.distributed
    n = batch.shape[0] if batch.batch_dims else 0
    rows = ctx.all_gather_object(n)
    if sum(rows) == 0:
        if ctx.is_main:
            tqdm.write(f"RIPT step {trainer.step + 1}: dynamic sampling found no informative "
                       "group on any rank; nothing to learn from, the policy is unchanged.")
        return {"train/skipped": 1, "train/batch": 0}
    local_mb = trainer.minibatch_size // ctx.world_size
    steps = max(-(-r // local_mb) for r in rows)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    losses, clips, kls, norms, exits = [], [], [], [], []
    for _ in range(trainer.ppo_epochs):
        order = torch.randperm(n, generator=trainer._shuffle)
        for step in range(steps):
            sizes = [max(0, min(local_mb, r - step * local_mb)) for r in rows]
            trainer.optimizer.zero_grad(set_to_none=True)
            if sizes[ctx.rank]:
                out = trainer.loss(batch[order[step * local_mb : (step + 1) * local_mb]])
                loss = out["loss_objective"]
                loss.backward()
                losses.append(float(loss.detach()))
                clips.append(float(out["clip_fraction"]))
                kls.append(float(out["kl_approx"]))
                if "support_exit_fraction" in out.keys():
                    exits.append(float(out["support_exit_fraction"]))
            ctx.all_reduce_gradients(params, weight=ctx.share_weight(sizes[ctx.rank], sizes))
            if trainer.max_grad_norm is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params, trainer.max_grad_norm)))
            trainer.optimizer.step()
    # averaged over the ranks that had rows (a rank with none reports nothing)
    local = [(float(np.mean(v)) if v else None) for v in (losses, clips, kls, exits)]
    gathered = ctx.all_gather_object(local)
    names = ("train/loss", "train/clip_fraction", "train/kl_approx", "train/support_exit_fraction")
    record = {}
    for i, name in enumerate(names):
        values = [g[i] for g in gathered if g[i] is not None]
        if values:
            record[name] = float(np.mean(values))
    record.update({"train/batch": sum(rows), "train/skipped": 0})
    if norms:
        record["train/grad_norm"] = float(np.mean(norms))
    return record


class RankCollector(BaseCollector):
    """Yields this rank's share of each global batch of B trajectories.

    - ``mode="per_rank"``: every rank owns ``collector`` (B/G informative
      rollouts per batch, its own context stream); nothing is sent.
    - ``mode="rank0"``: rank 0 owns ``collector`` (all B rollouts, e.g. a
      :class:`~torchrl_ript.collectors.RayGroupCollector`), splits each batch
      into G contiguous shares and scatters them; the other ranks pass
      ``collector=None``.

    ``last_stats`` holds the collection statistics of the whole batch (summed
    over ranks), the same on every rank. :meth:`update_policy_weights_` is
    forwarded to rank 0's collector (remote workers), a no-op elsewhere.

    Examples:
        >>> ctx = DistributedContext(rank=0, world_size=1)
        >>> batches = [TensorDict({"reward": torch.ones(4, 1)}, [4])]
        >>> [b.shape for b in RankCollector(batches, ctx, mode="rank0")]
        [torch.Size([4])]
    """

    def __init__(self, collector, distributed: DistributedContext, *, mode: str = "per_rank") -> None:
        if mode not in ("per_rank", "rank0"):
            raise ValueError(f"mode must be 'per_rank' or 'rank0', got {mode!r}.")
        owner = mode == "per_rank" or distributed.is_main
        if owner and collector is None:
            raise ValueError(f"mode={mode!r}: rank {distributed.rank} needs a collector.")
        self.collector = collector if owner else None
        self.distributed = distributed
        self.mode = mode
        self.last_stats = None
        self._iterator = None

    # the in-process GroupCollector of this rank, for the trainer's checkpoint
    @property
    def _local(self):
        return self.collector

    def iterator(self):
        source = iter(self.collector) if self.collector is not None else None
        ctx = self.distributed
        while True:
            try:
                batch = next(source) if source is not None else None
            except StopIteration:  # a finite collector (total_frames) is done
                return
            stats = getattr(self.collector, "last_stats", None) if self.collector is not None else None
            if self.mode == "per_rank":
                self.last_stats = merge_collection_stats(ctx.all_gather_object(stats))
                yield batch
            else:
                if ctx.is_main:
                    if batch is None:
                        raise RuntimeError(
                            "mode='rank0' needs a collector that yields batches (no replay_buffer=)."
                        )
                    shares = _split_rows(batch, ctx.world_size)
                else:
                    shares = None
                self.last_stats = ctx.broadcast_object(stats)
                yield ctx.scatter_object(shares)

    def update_policy_weights_(self, *args, **kwargs) -> None:
        if self.collector is not None and hasattr(self.collector, "update_policy_weights_"):
            from torchrl_ript.collectors.group import GroupCollector

            # an in-process GroupCollector runs the trained modules themselves
            if not isinstance(self.collector, GroupCollector):
                self.collector.update_policy_weights_(*args, **kwargs)

    # -- checkpoint: the context streams of every rank -----------------------
    def context_state_dict(self) -> dict:
        """Collective: every rank's collector context state (rank 0's for ``"rank0"``)."""
        own = _collector_context_state(self.collector)
        if self.mode == "rank0":
            return {"mode": "rank0", "states": [self.distributed.broadcast_object(own)]}
        return {"mode": "per_rank", "states": self.distributed.all_gather_object(own)}

    def load_context_state_dict(self, state: dict) -> None:
        states = state.get("states", [])
        if self.collector is None or not states:
            return
        index = 0 if self.mode == "rank0" else self.distributed.rank
        if state.get("mode") != self.mode or index >= len(states):
            import warnings

            warnings.warn(
                f"checkpoint collector state was written by a {state.get('mode')!r} run with "
                f"{len(states)} collectors; this {self.mode!r} run on "
                f"{self.distributed.world_size} ranks starts fresh context streams.",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        _load_collector_context_state(self.collector, states[index])

    def shutdown(self, *args, **kwargs) -> None:
        if self.collector is not None and hasattr(self.collector, "shutdown"):
            self.collector.shutdown()

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        return seed

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict) -> None:
        pass


def _split_rows(batch: TensorDictBase, parts: int) -> list[TensorDictBase]:
    n = batch.shape[0]
    size = math.ceil(n / parts) if n else 0
    return [batch[i * size : (i + 1) * size] for i in range(parts)]


def _collector_context_state(collector) -> dict | None:
    if collector is None:
        return None
    if hasattr(collector, "context_state_dict"):  # Ray workers
        return {"remote": collector.context_state_dict()}
    if hasattr(collector, "state_dict"):  # a GroupCollector: its context stream
        return {"local": collector.state_dict()}
    return None


def _load_collector_context_state(collector, state: dict | None) -> None:
    if state is None:
        return
    if "remote" in state:
        collector.load_context_state_dict(state["remote"])
    else:
        collector.load_state_dict(state["local"])


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
    :func:`~torchrl_ript.trainers.factory.make_ript_trainer` builds its
    :class:`~torchrl_ript.collectors.GroupCollector` over the example's env
    pool as before. ``backend="ray"`` gives a
    :class:`~torchrl_ript.collectors.RayGroupCollector` with ``num_workers``
    remote GroupCollectors, each over ``envs_per_worker`` (default K) copies
    of ``env_fn`` in a :func:`~torchrl_ript.trainers.factory.make_batched_env`
    pool (processes when ``parallel``, as rendering envs need). Under ``torchrun``
    (``distributed`` given) the collector is wrapped in a
    :class:`RankCollector`: with ``ddp_collect="per_rank"`` each rank collects
    ``B / G`` rollouts with its own seed (``config.num_envs`` env slots per
    rank), with ``"rank0"`` rank 0 collects all B and scatters. See
    :data:`COLLECTOR_DEFAULTS` for the options.

    Examples:
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv
        >>> from torchrl_ript.config import RIPTConfig
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> actor, _ = toy_laplace_actor()
        >>> contexts = ContextDataset(torch.rand(8, 2) - 0.5, [0] * 8, ["track"], seed=0)
        >>> config = RIPTConfig(group_size=4, batch_size=8, minibatch_size=4, num_envs=4,
        ...                     max_decisions=3)
        >>> make_collector(config, {"backend": "local"}, env_fn=ContextToyVLAEnv, policy=actor,
        ...                train_contexts=contexts) is None  # the default collector
        True
        >>> ctx = DistributedContext(rank=0, world_size=1)  # a 1-rank "torchrun" job
        >>> collector = make_collector(config, {"backend": "local"}, env_fn=ContextToyVLAEnv,
        ...                            policy=actor, train_contexts=contexts, parallel=False,
        ...                            distributed=ctx)
        >>> type(collector.collector).__name__, collector.collector.batch_trajs
        ('GroupCollector', 8)
        >>> batch = next(iter(collector))
        >>> batch.shape, collector.last_stats.rollouts_kept
        (torch.Size([8]), 8)
        >>> collector.shutdown()
    """
    from torchrl_ript.trainers.factory import make_batched_env, make_group_collector

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
    K, B = config.group_size, config.batch_size
    per_rank = distributed is not None and mode == "per_rank"
    if per_rank and B % (world * K):
        raise ValueError(
            f"ript.batch_size={B} must split into {world} ranks of whole groups of K={K}: "
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
        from torchrl_ript.collectors.distributed import RayGroupCollector

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
