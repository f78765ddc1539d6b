"""The RIPT-VLA training loop (Algorithm 1 of the paper).

Why not :class:`torchrl.trainers.Trainer` with hooks: one RIPT step is
"collect B trajectories, N epochs of shuffled minibatches over them, then
evaluate and checkpoint with every RNG and the collector's context stream";
expressing that through Trainer's per-batch hooks took more code than this
loop, while logging goes through TorchRL's own loggers.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.record.loggers import Logger
from tqdm.auto import tqdm

from torchrl_ript.collectors.group import GroupCollector
from torchrl_ript.config import check_target_kl, check_update_threads
from torchrl_ript.models.checkpoint import CheckpointError
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss
from torchrl_ript.transforms.group_advantage import random_sign_advantages

__all__ = ["RIPTTrainer", "CheckpointError"]

_CHECKPOINT_FORMAT = "torchrl_ript.RIPTTrainer/1"
# settings a resumed run may change (the rest must match the checkpoint)
_RESUMABLE_CHANGES = {"num_steps", "eval_every", "num_envs", "update_threads"}  # a longer run, or speed only
# the loss outputs averaged into each step's record
_TRAIN_STATS = {
    "loss_objective": "train/loss",
    "clip_fraction": "train/clip_fraction",
    "kl_approx": "train/kl_approx",
    "kl_k3": "train/kl_k3",
    "support_exit_fraction": "train/support_exit_fraction",
}


class RIPTTrainer:
    """Alternate rollout collection and PPO updates for ``num_steps`` steps.

    Each step: sync the sampling policy (multi-process collectors), collect B
    informative trajectories, run ``ppo_epochs`` epochs of shuffled
    minibatches of ``minibatch_size`` trajectories (gradient-norm clipping,
    the optimizer's per-group learning rates), step the schedule, evaluate
    every ``eval_every`` steps, checkpoint, and log through a TorchRL
    :class:`~torchrl.record.loggers.Logger`.

    Keyword Args:
        collector: a :class:`~torchrl_ript.collectors.GroupCollector` (or any
            TorchRL collector yielding trajectory rows with advantages).
        loss: a :class:`~torchrl_ript.objectives.RIPTClipPPOLoss`.
        optimizer: over the actor's trainable parameters.
        num_steps (int): M, RIPT steps.
        ppo_epochs (int): N, passes over each batch.
        minibatch_size (int): trajectories per gradient step.
        max_grad_norm (float, optional): gradient clipping. Defaults to 1.0.
        target_kl (float, optional): stop a step's PPO epochs early once an
            epoch's mean per-decision KL estimate (the loss's ``kl_k3``, from
            the collecting policy, measured before each gradient step) passes
            it; ``train/epochs`` logs the epochs run. Defaults to ``None``
            (always ``ppo_epochs``).
        null_advantages (bool): a control run: every batch's advantages get
            random signs per trajectory, same magnitudes (the signal audit's
            null, :func:`~torchrl_ript.transforms.random_sign_advantages`), so
            the update keeps its size but loses its relation to the reward.
            Held-out success of such a run, against the same SFT policy and a
            real run, shows how far the recipe's steps move the policy on noise
            alone. Defaults to ``False``.
        update_threads (int, optional): torch intra-op threads during a
            step's PPO epochs, the process's setting restored after them. The
            collector's env workers wait for the next batch while the learner
            updates, so the update may use the cores collection leaves to them
            (the main job: 2 threads on 2 cores took 0.6-0.75x the update time of
            one; README "The default main job"). Defaults to ``None`` (the
            process's setting).
        scheduler: optional LR scheduler, stepped once per RIPT step.
        evaluate (callable, optional): ``evaluate() -> dict`` with at least
            ``"success_rate"``; called before training and every ``eval_every``
            steps (and after the last).
        logger (Logger, optional): TorchRL logger for scalars.
        checkpoint_dir (path, optional): where ``latest.pt`` is written every
            ``checkpoint_every`` steps; :meth:`resume` reloads it.
        modules (dict, optional): extra modules to checkpoint (the actor is
            reached through the loss).
        progress (bool): tqdm bar. Defaults to True.
        seed (int, optional): seed of the minibatch shuffling.
        config (dict, optional): the run's settings (e.g.
            ``RIPTConfig.as_dict()``), stored in checkpoints; :meth:`resume`
            refuses a checkpoint written with other values (except
            ``num_steps``, ``eval_every``, ``num_envs``).
        distributed (optional): the data-parallel hook, this rank of a
            ``torchrun`` job: a :class:`~torchrl_ript.trainers.ddp.DistributedContext`
            (:func:`~torchrl_ript.trainers.ddp.init_distributed`) or any object
            with its ``rank``, ``world_size``, ``is_main``,
            ``all_gather_object``, ``broadcast_object``, ``broadcast_module``,
            ``share_weight`` and ``all_reduce_gradients(params, weight=)``.
            The collector yields this rank's share of each batch (see
            :class:`~torchrl_ript.trainers.ddp.RankCollector`); the same update
            loop then takes ``minibatch_size / world_size`` rows per rank per
            gradient step and reduces the gradients through the hook; rank 0
            evaluates, logs and writes checkpoints; :meth:`save` and
            :meth:`resume` must be called on every rank.

    Examples:
        >>> import torch
        >>> from torchrl.envs import AsyncEnvPool, SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector, RIPTClipPPOLoss
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> from torchrl_ript.trainers import RIPTTrainer, evaluate_success, make_optimizer
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> contexts = ContextDataset(torch.rand(40, 2) - 0.5, [0] * 40, ["track"], seed=0)
        >>> train, held_out = contexts.split(8, seed=0)
        >>> make_env = lambda: ContextToyVLAEnv(action_dim=2, max_steps=4, success_tol=0.15)
        >>> actor, _ = toy_laplace_actor()
        >>> collector = GroupCollector(SerialEnv(4, make_env), actor, context_dataset=train,
        ...                            group_size=4, trajs_per_batch=8, max_frames_per_traj=4, seed=0)
        >>> eval_env = AsyncEnvPool([make_env] * 4, backend="threading")  # reused by every evaluation
        >>> trainer = RIPTTrainer(
        ...     collector=collector, loss=RIPTClipPPOLoss(actor), optimizer=make_optimizer(actor, lr=1e-2),
        ...     num_steps=2, ppo_epochs=2, minibatch_size=4, progress=False, seed=0,
        ...     evaluate=lambda: evaluate_success(eval_env, actor, held_out, horizon=4, progress=False))
        >>> history = trainer.train()
        >>> [r["step"] for r in history], [r["train/batch"] for r in history]  # B=8 informative rollouts
        ([1, 2], [8, 8])
        >>> trainer.env_steps == sum(r["collect/env_steps"] for r in history)
        True
        >>> len(trainer.eval_history)  # before training, then after each step
        3
        >>> collector.shutdown(); eval_env.close()
    """

    def __init__(
        self,
        *,
        collector: GroupCollector,
        loss: RIPTClipPPOLoss,
        optimizer: torch.optim.Optimizer,
        num_steps: int,
        ppo_epochs: int,
        minibatch_size: int,
        max_grad_norm: float | None = 1.0,
        target_kl: float | None = None,
        null_advantages: bool = False,
        update_threads: int | None = None,
        scheduler=None,
        evaluate: Callable[[], dict] | None = None,
        eval_every: int = 1,
        logger: Logger | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1,
        modules: dict[str, nn.Module] | None = None,
        progress: bool = True,
        seed: int | None = None,
        config: dict | None = None,
        distributed=None,
    ) -> None:
        for name, value in (("num_steps", num_steps), ("ppo_epochs", ppo_epochs),
                            ("minibatch_size", minibatch_size), ("eval_every", eval_every),
                            ("checkpoint_every", checkpoint_every)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.collector = collector
        self.loss = loss
        self.optimizer = optimizer
        self.num_steps = int(num_steps)
        self.ppo_epochs = int(ppo_epochs)
        self.minibatch_size = int(minibatch_size)
        self.max_grad_norm = max_grad_norm
        check_target_kl(target_kl)  # ConfigError, a ValueError
        self.target_kl = target_kl
        self.null_advantages = bool(null_advantages)
        check_update_threads(update_threads)  # ConfigError, a ValueError
        self.update_threads = update_threads
        self._null_seed = 0 if seed is None else int(seed)
        self.scheduler = scheduler
        self.evaluate_fn = evaluate
        self.eval_every = int(eval_every)
        self.logger = logger
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.modules = dict(modules or {})
        self.distributed = distributed
        self.is_main = distributed is None or distributed.is_main
        if distributed is not None and self.minibatch_size % distributed.world_size:
            raise ValueError(
                f"minibatch_size={minibatch_size} (rows per gradient step over all ranks) must "
                f"be a multiple of the {distributed.world_size} ranks."
            )
        self.progress = progress and self.is_main
        self.config = dict(config) if config is not None else None
        self.step = 0
        self.env_steps = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self._shuffle = torch.Generator()
        if seed is not None:
            self._shuffle.manual_seed(seed)

    # -- loop -----------------------------------------------------------------
    def train(self) -> list[dict]:
        """Run the remaining steps; returns one record per step."""
        if self.distributed is not None:  # every rank starts from rank 0's weights
            self.distributed.broadcast_module(self.loss.actor_network)
        if self.evaluate_fn is not None and not self.eval_history:
            self._evaluate()
        iterator = iter(self.collector)
        bar = tqdm(range(self.step, self.num_steps), desc="RIPT", disable=not self.progress,
                   initial=self.step, total=self.num_steps)
        for _ in bar:
            start = time.perf_counter()
            self._sync_policy()
            with warnings.catch_warnings():
                # the draw-limit warning: the trainer reports it once, with the stats, below
                warnings.filterwarnings("ignore", message="GroupCollector drew max_context_draws",
                                        category=RuntimeWarning)
                batch = next(iterator)
            if batch is None:  # the collector wrote into a user replay buffer
                batch = self.collector.replay_buffer[:]
            stats = getattr(self.collector, "last_stats", None)
            record = {"step": self.step + 1}
            if stats is not None:
                record.update({f"collect/{k}": v for k, v in stats.as_dict().items()})
                self.env_steps += stats.env_steps
            record.update(self.update(batch))
            if self.scheduler is not None and not record["train/skipped"]:
                self.scheduler.step()  # a step without an update does not advance the schedule
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            record["time/step_s"] = time.perf_counter() - start
            record["env_steps_total"] = self.env_steps
            self.step += 1
            if self.evaluate_fn is not None and (
                self.step % self.eval_every == 0 or self.step == self.num_steps
            ):
                record.update({f"eval/{k}": v for k, v in self._evaluate().items()})
            self.history.append(record)
            self._log(record)
            bar.set_postfix(
                sr_rollout=f"{record.get('collect/success_rate', float('nan')):.2f}",
                kept=record.get("collect/rollouts_kept", 0),
                sr_eval=f"{self.eval_history[-1]['success_rate']:.2f}" if self.eval_history else "-",
            )
            if self.checkpoint_dir is not None and (
                self.step % self.checkpoint_every == 0 or self.step == self.num_steps
            ):
                self.save(self.checkpoint_dir / "latest.pt")
        bar.close()
        if self.progress or self.skipped_steps:
            tqdm.write(self.summary())
        return self.history

    @property
    def skipped_steps(self) -> int:
        """Steps whose batch held no informative group (no update was made)."""
        return sum(int(r.get("train/skipped", 0)) for r in self.history)

    def summary(self) -> str:
        """One line: steps, updates, env steps, held-out success rate first -> last."""
        line = (f"RIPT: {self.step}/{self.num_steps} steps, {self.step - self.skipped_steps} with an update"
                f" ({self.skipped_steps} without an informative group), {self.env_steps} env steps")
        if len(self.eval_history) >= 1:
            line += (f", held-out success rate {self.eval_history[0]['success_rate']:.3f} -> "
                     f"{self.eval_history[-1]['success_rate']:.3f}")
        return line + "."

    def update(self, batch: TensorDictBase) -> dict:
        """The PPO epochs over this process's rows of the batch (the one update loop).

        In one process: ``ppo_epochs`` passes of shuffled minibatches of
        ``minibatch_size`` rows. Under ``distributed`` every rank takes the
        same number of gradient steps on ``minibatch_size / world_size`` of
        its own rows, and the hook's ``all_reduce_gradients`` averages each
        step's gradients weighted by rows (:meth:`DistributedContext.share_weight`),
        so a rank short of rows still gives the global-mean gradient and every
        rank applies the same update.

        ``train()`` calls it on every collected batch; call it directly to
        update on a batch of your own (e.g. to audit one update). Returns the
        ``train/*`` statistics of the step.
        """
        sync = self.distributed
        n = batch.shape[0] if batch.batch_dims else 0
        rows = [n] if sync is None else sync.all_gather_object(n)
        if sum(rows) == 0:
            if self.is_main:
                stats = getattr(self.collector, "last_stats", None)
                detail = (
                    f" ({stats.contexts_drawn} contexts drawn: {stats.groups_all_failure} groups "
                    f"all failed, {stats.groups_all_success} all succeeded)"
                    if stats is not None
                    else ""
                )
                where = "" if sync is None else " on any rank"
                tqdm.write(
                    f"RIPT step {self.step + 1}: dynamic sampling found no informative group{where}"
                    f"{detail}; nothing to learn from: no update, the schedule does not advance."
                )
            return {"train/skipped": 1, "train/batch": 0}
        if self.null_advantages:  # a fresh draw per step (and rank): the signs never line up with rewards
            key = self.loss.tensor_keys.advantage
            seed = self._null_seed * 1_000_003 + self.step * 1009 + (0 if sync is None else sync.rank)
            batch = batch.clone(False).set(key, random_sign_advantages(batch.get(key), seed=seed))
        with torch_threads(self.update_threads):
            return self._epochs(batch, n, rows)

    def _epochs(self, batch: TensorDictBase, n: int, rows: list[int]) -> dict:
        """The PPO epochs of :meth:`update` on ``n`` local rows (``rows``: every rank's)."""
        sync = self.distributed
        local_minibatch = self.minibatch_size // (1 if sync is None else sync.world_size)
        steps = max(-(-r // local_minibatch) for r in rows)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        values: dict[str, list[float]] = {key: [] for key in _TRAIN_STATS.values()}
        norms = []
        epochs, epoch_kl = 0, []
        for _ in range(self.ppo_epochs):
            if self.target_kl is not None and epochs and self._mean_kl(epoch_kl) > self.target_kl:
                break
            epochs, epoch_kl = epochs + 1, []
            order = torch.randperm(n, generator=self._shuffle)
            for step in range(steps):
                start = step * local_minibatch
                self.optimizer.zero_grad(set_to_none=True)
                if start < n:
                    out = self.loss(batch[order[start : start + local_minibatch]])
                    out["loss_objective"].backward()
                    for out_key, name in _TRAIN_STATS.items():
                        if out_key in out.keys():
                            values[name].append(float(out[out_key].detach()))
                    if "kl_k3" in out.keys():
                        epoch_kl.append(float(out["kl_k3"]))
                if sync is not None:  # every rank, even one without rows this step
                    sizes = [max(0, min(local_minibatch, r - start)) for r in rows]
                    sync.all_reduce_gradients(params, weight=sync.share_weight(sizes[sync.rank], sizes))
                if self.max_grad_norm is not None:
                    norms.append(float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)))
                self.optimizer.step()
        means = {name: float(np.mean(v)) for name, v in values.items() if v}
        if sync is not None:  # averaged over the ranks that had rows (a rank with none reports nothing)
            gathered = sync.all_gather_object(means)
            means = {name: float(np.mean([g[name] for g in gathered if name in g]))
                     for name in _TRAIN_STATS.values() if any(name in g for g in gathered)}
        record = {name: means[name] for name in ("train/loss", "train/clip_fraction", "train/kl_approx",
                                                 "train/kl_k3") if name in means}
        record.update({"train/batch": sum(rows), "train/skipped": 0, "train/epochs": epochs})
        if norms:
            record["train/grad_norm"] = float(np.mean(norms))
        if "train/support_exit_fraction" in means:  # top-k sampling: sampled tokens that left the top-k
            record["train/support_exit_fraction"] = means["train/support_exit_fraction"]
        return record

    def _mean_kl(self, epoch_kl: list[float]) -> float:
        """Mean ``kl_k3`` of an epoch's gradient steps, over every rank (all
        ranks then stop at the same epoch)."""
        if self.distributed is not None:
            epoch_kl = [v for rank in self.distributed.all_gather_object(epoch_kl) for v in rank]
        return float(np.mean(epoch_kl)) if epoch_kl else 0.0

    def _evaluate(self) -> dict:
        if not self.is_main:  # rank 0 evaluates; the others wait at the next collective
            return {}
        result = self.evaluate_fn()
        scalars = {"success_rate": float(result["success_rate"]), "step": self.step}
        for task, rate in result.get("per_task", {}).items():
            scalars[f"sr/{task}"] = float(rate)
        self.eval_history.append(scalars)
        if self.logger is not None:
            for key, value in scalars.items():
                if key != "step":
                    self.logger.log_scalar(f"eval/{key}", value, step=self.step)
        return {k: v for k, v in scalars.items() if k != "step"}

    def _sync_policy(self) -> None:
        # A same-process GroupCollector runs the very modules being trained;
        # multi-process collectors need the new weights sent.
        if not isinstance(self.collector, GroupCollector) and hasattr(
            self.collector, "update_policy_weights_"
        ):
            self.collector.update_policy_weights_()

    def _log(self, record: dict) -> None:
        if self.logger is None or not self.is_main:
            return
        for key, value in _flat_scalars(record):
            if key != "step" and math.isfinite(float(value)):
                self.logger.log_scalar(key, float(value), step=self.step)

    # -- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "env_steps": self.env_steps,
            "actor": self.loss.actor_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "history": self.history,
            "eval_history": self.eval_history,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "shuffle": self._shuffle.get_state(),
            },
        }
        if hasattr(self.collector, "state_dict"):  # the context stream(s); collective under DDP
            state["collector"] = self.collector.state_dict()
        if self.distributed is not None:  # collective: each rank's own RNG streams
            state["rng_per_rank"] = self.distributed.all_gather_object(state["rng"])
        state["format"] = _CHECKPOINT_FORMAT
        state["config"] = self.config
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.env_steps = state["env_steps"]
        self.loss.actor_network.load_state_dict(state["actor"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for name, module_state in state["modules"].items():
            self.modules[name].load_state_dict(module_state)
        self.history = list(state["history"])
        self.eval_history = list(state["eval_history"])
        rng = state["rng"]
        per_rank = state.get("rng_per_rank")
        if self.distributed is not None and per_rank and len(per_rank) == self.distributed.world_size:
            rng = per_rank[self.distributed.rank]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self._shuffle.set_state(rng["shuffle"])
        if "collector" in state and hasattr(self.collector, "load_state_dict"):
            self.collector.load_state_dict(state["collector"])

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (write a temporary file, then rename):
        a kill during the save leaves the previous ``path`` intact."""
        path = Path(path)
        state = self.state_dict()
        if not self.is_main:  # under DDP rank 0 writes (state_dict() gathered every rank's part)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        history = path.parent / "history.json"
        tmp = history.with_name(history.name + ".tmp")
        tmp.write_text(json.dumps({"train": self.history, "eval": self.eval_history}, indent=1, default=float))
        tmp.replace(history)
        return path

    def resume(self, path: str | Path) -> bool:
        """Load ``path`` if it exists; returns whether it did.

        A file that is not a readable RIPT checkpoint (truncated, corrupt,
        another program's), or one written for another model or another
        configuration raises :class:`CheckpointError` saying which, before
        anything is changed or overwritten. Under DDP, rank 0 reads the file
        and sends it to the other ranks (no shared disk needed).
        """
        path = Path(path)
        state, error = None, None
        if self.is_main and path.exists():
            try:
                state = self._read_checkpoint(path)
            except CheckpointError as err:
                error = err
        if self.distributed is not None:  # every rank gets what rank 0 read (or its error)
            state, error = self.distributed.broadcast_object((state, error))
        if error is not None:
            raise error
        if state is None:
            return False
        self.load_state_dict(state)
        return True

    def _read_checkpoint(self, path: Path) -> dict:
        try:
            state = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as err:  # torch raises several types for broken zip/pickle data
            raise CheckpointError(
                f"cannot read checkpoint {path}: the file is truncated or corrupt ({type(err).__name__}: "
                f"{err}). Move it away to start over, or resume from another checkpoint."
            ) from err
        self._check_checkpoint(state, path)
        return state

    def _check_checkpoint(self, state, path: Path) -> None:
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a RIPTTrainer checkpoint (no {_CHECKPOINT_FORMAT!r} marker): it was "
                "written by something else (e.g. save_policy writes policy files: load those with "
                "torchrl_ript.models.load_policy, or pass them as policy.checkpoint)."
            )
        mine = self.loss.actor_network.state_dict()
        theirs = state["actor"]
        missing = sorted(set(mine) - set(theirs))
        unexpected = sorted(set(theirs) - set(mine))
        shapes = sorted(k for k in set(mine) & set(theirs) if tuple(mine[k].shape) != tuple(theirs[k].shape))
        if missing or unexpected or shapes:
            detail = "; ".join(
                f"{label}: {names[:3]}{' ...' if len(names) > 3 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
                if names
            )
            raise CheckpointError(
                f"{path} was written for another model ({detail}): resume with the policy it was "
                "trained with, or use another checkpoint_dir for this model."
            )
        saved, current = state.get("config") or {}, self.config or {}
        changed = {k: (saved[k], current[k]) for k in sorted(set(saved) & set(current))
                   if k not in _RESUMABLE_CHANGES and saved[k] != current[k]}
        if changed:
            diff = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in changed.items())
            raise CheckpointError(
                f"{path} was written with another configuration ({diff}): rerun with the same "
                "settings to resume, or use another checkpoint_dir to start a new run."
            )


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run a block with ``threads`` torch intra-op threads (``None``: unchanged), then restore.

    Examples:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _flat_scalars(record: dict, prefix: str = ""):
    """``(key, value)`` of a record's scalars; nested dicts (the collector's task
    mix) as ``outer/inner`` keys, e.g. ``collect/per_task/0/informative_rate``."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _flat_scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float, bool)):
            yield f"{prefix}{key}", value
