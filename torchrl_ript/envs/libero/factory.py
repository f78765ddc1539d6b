"""LIBERO pieces of a RIPT run: env pools over several tasks, demo files, contexts.

:class:`~torchrl_ript.envs.libero.LiberoContextEnv` simulates *one* task (a
LIBERO scene is a MuJoCo model built from that task's BDDL file), while the
RIPT collector and the evaluation loop give *any* context of their
:class:`~torchrl_ript.data.ContextDataset` to *any* free worker of one batched
env. :class:`LiberoMultiTaskEnv` reconciles the two: one worker process holds
one ``LiberoContextEnv`` per task it has met (built lazily, on the first
context of that task, optionally at most ``max_live_tasks`` of them) and
routes every context reset to the env of the context's ``task_id``. All tasks
of a suite share one spec (same robot, cameras, padded ``context_state``), so
a ``ParallelEnv`` of such workers is an ordinary batched context env.

:func:`libero_env_fn` picks the plain ``LiberoContextEnv`` for one task (no
indirection) and the multi-task env otherwise; both are picklable factories
for :func:`~torchrl_ript.trainers.factory.make_batched_env` (spawned workers).

Demo helpers: :func:`find_libero_demo_files` maps task ids to the official
LIBERO HDF5 files (``<task name>_demo.hdf5``) of a folder,
:func:`read_libero_demo_files` reads them in the canonical schema (LIBERO
stores images upside down: rotated back here), and
:func:`write_random_libero_demos` writes short random rollouts in the same
layout (smoke runs and tests, when no real demos are at hand).
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase

from torchrl_ript.data.demos import LIBERO_KEY_MAP, read_demo_attrs, read_demos
from torchrl_ript.envs.common import read_context
from torchrl_ript.envs.libero.contexts import _norm, write_libero_rollout_demos
from torchrl_ript.envs.libero.env import LiberoContextEnv, libero_suite_tasks

__all__ = [
    "LiberoMultiTaskEnv",
    "libero_env_fn",
    "find_libero_demo_files",
    "read_libero_demo_files",
    "write_random_libero_demos",
]


class LiberoMultiTaskEnv(EnvBase):
    """Several tasks of one LIBERO suite behind one context env (one process).

    A context reset (``set_state=True``) switches to the env of the context's
    ``task_id``, building it on first use; steps go to the env of the last
    reset. A plain reset (no context) resets the current task's env (at
    first: ``task_ids[0]``) from a benchmark init state. Outputs are those of
    :class:`~torchrl_ript.envs.libero.LiberoContextEnv` (``task_id`` and
    ``language_instruction`` follow the active task).

    Args:
        task_suite (str): a LIBERO suite (``"libero_spatial"``, ...).
        task_ids (sequence of int): the suite's task indices this env may be
            asked to simulate; a context of another task raises.

    Keyword Args:
        max_live_tasks (int, optional): keep at most this many task envs alive
            (least recently used one closed first; rebuilding one costs
            ~5-10 s on CPU). Default: all of ``task_ids`` (each one holds a
            MuJoCo model and a GL context: a few hundred MB).
        **env_kwargs: :class:`~torchrl_ript.envs.libero.LiberoContextEnv`
            options (``camera_size``, ``action_chunk``, ``max_episode_steps``, ...),
            the same for every task.

    Examples:
        >>> from torchrl_ript.envs.libero.factory import LiberoMultiTaskEnv
        >>> from torchrl_ript.envs import context_reset_td
        >>> from torchrl_ript.envs.libero.contexts import libero_contexts
        >>> env = LiberoMultiTaskEnv("libero_spatial", [0, 1], action_chunk=4)  # doctest: +SKIP
        >>> ctx = libero_contexts("libero_spatial", task_ids=[1])  # doctest: +SKIP
        >>> td = env.reset(context_reset_td(ctx.states[:1], ctx.task_ids[:1])[0])  # doctest: +SKIP
        >>> int(td["task_id"])  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        task_suite: str,
        task_ids: Sequence[int],
        *,
        max_live_tasks: int | None = None,
        **env_kwargs,
    ) -> None:
        task_ids = tuple(int(t) for t in task_ids)
        if not task_ids:
            raise ValueError("task_ids is empty: give at least one task of the suite.")
        if max_live_tasks is not None and max_live_tasks < 1:
            raise ValueError(f"max_live_tasks must be >= 1 or None, got {max_live_tasks}.")
        super().__init__(batch_size=torch.Size([]))
        self.task_suite = task_suite
        self.task_ids = task_ids
        self.max_live_tasks = max_live_tasks
        self.env_kwargs = dict(env_kwargs)
        self._envs: OrderedDict[int, EnvBase] = OrderedDict()
        self._seed: int | None = None
        first = self._task_env(task_ids[0])
        self._active = task_ids[0]
        # Every task of a suite has the same spec (the instruction's example aside).
        self.full_observation_spec = first.full_observation_spec.clone()
        self.full_state_spec = first.full_state_spec.clone()
        self.full_action_spec = first.full_action_spec.clone()
        self.full_reward_spec = first.full_reward_spec.clone()
        self.full_done_spec = first.full_done_spec.clone()
        self.task_names = list(first.task_names)
        self.context_state_dim = first.context_state_dim
        self.action_chunk = first.action_chunk

    @property
    def live_tasks(self) -> list[int]:
        """Task ids whose env is built, least recently used first."""
        return list(self._envs)

    def _task_env(self, task_id: int) -> EnvBase:
        if task_id not in self.task_ids:
            raise ValueError(
                f"context of task {task_id} but this env simulates tasks {list(self.task_ids)} "
                f"of {self.task_suite}: build it with every task id its contexts use."
            )
        env = self._envs.get(task_id)
        if env is None:
            if self.max_live_tasks is not None:
                while len(self._envs) >= self.max_live_tasks:
                    _, old = self._envs.popitem(last=False)
                    old.close()
            env = LiberoContextEnv(self.task_suite, task_id, **self.env_kwargs)
            if self._seed is not None:
                env.set_seed(self._seed + task_id)
            self._envs[task_id] = env
        else:
            self._envs.move_to_end(task_id)
        return env

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        context = read_context(tensordict)
        if context is not None:
            self._active = int(context[1])
        env = self._task_env(self._active)
        return env._reset(tensordict, **kwargs)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._task_env(self._active)._step(tensordict)

    def _set_seed(self, seed: int | None) -> None:
        self._seed = seed
        if seed is not None:
            for task_id, env in self._envs.items():
                env.set_seed(seed + task_id)

    def close(self, *, raise_if_closed: bool = True) -> None:
        for env in self._envs.values():
            if not env.is_closed:
                env.close()
        self._envs.clear()
        super().close(raise_if_closed=raise_if_closed)


def libero_env_fn(
    suite: str,
    task_ids: Sequence[int],
    *,
    max_live_tasks: int | None = None,
    **env_kwargs,
) -> Callable[[], EnvBase]:
    """A picklable factory of one LIBERO context env accepting contexts of ``task_ids``.

    One task: :class:`~torchrl_ript.envs.libero.LiberoContextEnv` itself;
    several: :class:`LiberoMultiTaskEnv`. Pass it to
    :func:`~torchrl_ript.trainers.factory.make_batched_env`.

    Examples:
        >>> from torchrl_ript.envs.libero.factory import libero_env_fn
        >>> libero_env_fn("libero_spatial", [0], action_chunk=8).func.__name__
        'LiberoContextEnv'
        >>> libero_env_fn("libero_spatial", [0, 3]).func.__name__
        'LiberoMultiTaskEnv'
    """
    task_ids = [int(t) for t in task_ids]
    if not task_ids:
        raise ValueError("task_ids is empty: give at least one task of the suite.")
    # checked here, not in the worker processes that build the envs (their errors arrive late)
    n_tasks = len(libero_suite_tasks(suite))
    bad = [t for t in task_ids if not 0 <= t < n_tasks]
    if bad:
        raise ValueError(f"task ids {bad} out of range for {suite} ({n_tasks} tasks: 0-{n_tasks - 1}).")
    if len(task_ids) == 1:
        return partial(LiberoContextEnv, suite, task_ids[0], **env_kwargs)
    return partial(LiberoMultiTaskEnv, suite, task_ids, max_live_tasks=max_live_tasks, **env_kwargs)


def find_libero_demo_files(folder: str | os.PathLike, suite: str, task_ids: Sequence[int]) -> list[Path]:
    """The demo file of each task, in ``task_ids`` order.

    Looks in ``folder`` and ``folder/<suite>`` (the official datasets'
    layout) for ``<task name>_demo.hdf5``; otherwise any ``*.hdf5`` there whose
    ``problem_info`` language instruction is the task's. Raises
    ``FileNotFoundError`` naming the tasks without a file.
    """
    tasks = libero_suite_tasks(suite)
    roots = [Path(folder), Path(folder) / suite]
    candidates = sorted({p for root in roots if root.is_dir() for p in root.glob("*.hdf5")})
    by_language: dict[str, Path] = {}
    paths, missing = [], []
    for task_id in task_ids:
        task = tasks[int(task_id)]
        named = [root / f"{task.name}_demo.hdf5" for root in roots]
        found = next((p for p in named if p.exists()), None)
        if found is None:
            if not by_language:
                by_language = _languages(candidates)
            found = by_language.get(_norm(task.language))
        if found is None:
            missing.append(f"{task_id} ({task.name})")
        else:
            paths.append(found)
    if missing:
        raise FileNotFoundError(
            f"no LIBERO demo file in {folder} for {suite} task(s) {', '.join(missing)}: expected "
            "<task name>_demo.hdf5 (the official LIBERO datasets' names), or leave demos.dir "
            "empty to write random rollouts (smoke runs only)."
        )
    return paths


def read_libero_demo_files(paths: Sequence[str | os.PathLike], *, max_demos: int | None = None) -> list:
    """Read LIBERO HDF5 files in the canonical schema (images rotated upright)."""
    files = [read_demos(p, key_map=LIBERO_KEY_MAP, rotate_images_180=True) for p in paths]
    if max_demos is not None:
        for file in files:
            del file.demos[max_demos:]
    return files


def write_random_libero_demos(
    folder: str | os.PathLike,
    suite: str,
    task_ids: Sequence[int],
    *,
    num_demos: int = 2,
    num_steps: int = 16,
    camera_size: int = 128,
    seed: int = 0,
) -> list[Path]:
    """Write ``num_demos`` random ``num_steps``-step rollouts per task as LIBERO files.

    For smoke runs and tests: real simulator, real layout, meaningless
    actions (a policy cloned from them never succeeds). Files are named as
    the official datasets (``<task name>_demo.hdf5``); existing ones are kept.
    """
    tasks = libero_suite_tasks(suite)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for task_id in task_ids:
        path = folder / f"{tasks[int(task_id)].name}_demo.hdf5"
        if not path.exists():
            env = LiberoContextEnv(suite, int(task_id), camera_size=camera_size,
                                   max_episode_steps=max(num_steps, 1))
            try:
                tmp = path.with_suffix(".tmp.hdf5")
                write_libero_rollout_demos(tmp, suite, int(task_id), num_demos=num_demos,
                                           num_steps=num_steps, policy="random", seed=seed, env=env)
                os.replace(tmp, path)  # a crash leaves no half-written demo file
            finally:
                env.close()
        paths.append(path)
    return paths


def _languages(paths: Sequence[Path]) -> dict[str, Path]:
    out = {}
    for path in paths:
        try:
            attrs = read_demo_attrs(path)
        except (OSError, KeyError):  # unreadable, or no 'data' group: not a demo file
            continue
        if "problem_info" in attrs:
            info = json.loads(attrs["problem_info"])
            out.setdefault(_norm(info.get("language_instruction", "")), path)
    return out
