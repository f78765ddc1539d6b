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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from tensordict import TensorDictBase
from torch import nn
from torchrl.collectors import BaseCollector

from torchrl_ript.collectors.distributed import merge_collection_stats
from torchrl_ript.collectors.group import GroupCollector

__all__ = [
    "DistributedContext",
    "RankCollector",
    "init_distributed",
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
        >>> from tensordict import TensorDict
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
        """Collective: :meth:`context_state_dict` (what a resumed run needs of the collectors)."""
        return self.context_state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.load_context_state_dict(state_dict)


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
