"""The RIPT-VLA training loop (Algorithm 1 of the paper)."""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.record.loggers import Logger
from tqdm.auto import tqdm

from torchrl_ript.collectors.group import GroupCollector
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss

__all__ = ["RIPTTrainer"]


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

    Examples:
        >>> import torch
        >>> from torchrl.envs import SerialEnv
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
        >>> eval_env = SerialEnv(4, make_env)
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
        scheduler=None,
        evaluate: Callable[[], dict] | None = None,
        eval_every: int = 1,
        logger: Logger | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1,
        modules: dict[str, nn.Module] | None = None,
        progress: bool = True,
        seed: int | None = None,
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
        self.scheduler = scheduler
        self.evaluate_fn = evaluate
        self.eval_every = int(eval_every)
        self.logger = logger
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.modules = dict(modules or {})
        self.progress = progress
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
        if self.evaluate_fn is not None and not self.eval_history:
            self._evaluate()
        iterator = iter(self.collector)
        bar = tqdm(range(self.step, self.num_steps), desc="RIPT", disable=not self.progress,
                   initial=self.step, total=self.num_steps)
        for _ in bar:
            start = time.perf_counter()
            self._sync_policy()
            batch = next(iterator)
            if batch is None:  # the collector wrote into a user replay buffer
                batch = self.collector.replay_buffer[:]
            stats = getattr(self.collector, "last_stats", None)
            record = {"step": self.step + 1}
            if stats is not None:
                record.update({f"collect/{k}": v for k, v in stats.as_dict().items()})
                self.env_steps += stats.env_steps
            record.update(self._optimise(batch))
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
        return self.history

    def _optimise(self, batch: TensorDictBase) -> dict:
        n = batch.shape[0] if batch.batch_dims else 0
        if n == 0:
            stats = getattr(self.collector, "last_stats", None)
            detail = (
                f" ({stats.contexts_drawn} contexts drawn: {stats.groups_all_failure} groups "
                f"all failed, {stats.groups_all_success} all succeeded)"
                if stats is not None
                else ""
            )
            tqdm.write(
                f"RIPT step {self.step + 1}: dynamic sampling found no informative group"
                f"{detail}; nothing to learn from, the policy is unchanged."
            )
            return {"train/skipped": 1, "train/batch": 0}
        losses, clips, kls, norms, exits = [], [], [], [], []
        for _ in range(self.ppo_epochs):
            order = torch.randperm(n, generator=self._shuffle)
            for start in range(0, n, self.minibatch_size):
                minibatch = batch[order[start : start + self.minibatch_size]]
                out = self.loss(minibatch)
                loss = out["loss_objective"]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                if self.max_grad_norm is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                    norms.append(float(norm))
                self.optimizer.step()
                losses.append(float(loss.detach()))
                clips.append(float(out["clip_fraction"]))
                kls.append(float(out["kl_approx"]))
                if "support_exit_fraction" in out.keys():
                    exits.append(float(out["support_exit_fraction"]))
        record = {
            "train/loss": float(np.mean(losses)),
            "train/clip_fraction": float(np.mean(clips)),
            "train/kl_approx": float(np.mean(kls)),
            "train/batch": n,
            "train/skipped": 0,
        }
        if norms:
            record["train/grad_norm"] = float(np.mean(norms))
        if exits:  # top-k sampling: how often a sampled token left the updated top-k
            record["train/support_exit_fraction"] = float(np.mean(exits))
        return record

    def _evaluate(self) -> dict:
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
        if self.logger is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float, bool)) and key != "step" and math.isfinite(float(value)):
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
        generator = getattr(self.collector, "_generator", None)
        if generator is not None:
            state["rng"]["collector"] = generator.get_state()
            state["collector_next_group"] = self.collector._next_group
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
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self._shuffle.set_state(rng["shuffle"])
        if "collector" in rng:
            self.collector._generator.set_state(rng["collector"])
            self.collector._next_group = state["collector_next_group"]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # never leave a half-written checkpoint
        (path.parent / "history.json").write_text(
            json.dumps({"train": self.history, "eval": self.eval_history}, indent=1, default=float)
        )
        return path

    def resume(self, path: str | Path) -> bool:
        """Load ``path`` if it exists; returns whether it did."""
        path = Path(path)
        if not path.exists():
            return False
        self.load_state_dict(torch.load(path, weights_only=False))
        return True
