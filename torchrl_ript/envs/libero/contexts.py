"""LIBERO context datasets: benchmark init states or first states of demonstrations.

A LIBERO context is a flattened MuJoCo state ``[time, qpos, qvel]`` of one
task, zero-padded at the end to ``context_state_dim`` (the convention of
:class:`~torchrl_ript.envs.libero.LiberoContextEnv`, see
:func:`~torchrl_ript.envs.libero.pad_state`). Task ids index the *whole
suite* (``task_names`` lists every task of the suite, even when a filter keeps
a few), so they match the ``task_id`` of the env built for that task.
Demo files are read with :func:`~torchrl_ript.data.demos.read_demo_starts`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.data.demos import DemoWriter, read_demo_starts
from torchrl_ript.envs.common import context_reset_td
from torchrl_ript.envs.libero.env import (
    LIBERO_CONTEXT_STATE_DIM,
    LiberoContextEnv,
    libero_suite_tasks,
    pad_state,
)

__all__ = ["libero_contexts", "sample_libero_starts", "write_libero_rollout_demos"]

_SOURCES = ("init_files", "demos", "sampled")


def libero_contexts(
    suite: str,
    *,
    task_ids: Sequence[int] | None = None,
    source: str = "init_files",
    demo_paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    context_state_dim: int | None = None,
    num_per_task: int = 50,
    sample_seed: int = 0,
    **dataset_kwargs,
) -> ContextDataset:
    """Contexts of a LIBERO suite as a :class:`~torchrl_ript.data.ContextDataset`.

    Args:
        suite: ``"libero_spatial"``, ``"libero_object"``, ``"libero_goal"``,
            ``"libero_10"`` or ``"libero_90"``.

    Keyword Args:
        task_ids: keep only these tasks (suite indices). Default: all.
        source: ``"init_files"``: the benchmark's fixed init states (50 per
            task, the evaluation protocol); ``"demos"``: the first state of
            every demonstration in ``demo_paths`` (what the official RIPT code
            uses for training contexts); ``"sampled"``: ``num_per_task`` fresh
            starts per task drawn by LIBERO's own placement sampler (the
            distribution of the init states, but new ones: e.g. for demos when
            all 50 init states are held out), seeded by ``sample_seed``; only
            for fixture-free scenes (``libero_object``), see
            :meth:`~torchrl_ript.envs.libero.LiberoContextEnv.sample_start`.
        demo_paths: LIBERO HDF5 files (``data/demo_i/states``), needed with
            ``source="demos"``. The task of each file is found from its
            ``problem_info`` language instruction, else its file name
            (``<task name>_demo.hdf5``).
        context_state_dim: padded state size. Defaults to
            :data:`~torchrl_ript.envs.libero.LIBERO_CONTEXT_STATE_DIM`.
        **dataset_kwargs: forwarded to :class:`ContextDataset` (``sampler``,
            ``noise_std``, ``seed``).

    Examples:
        >>> from torchrl_ript.envs.libero.contexts import libero_contexts
        >>> ds = libero_contexts("libero_spatial", task_ids=[0, 3])  # doctest: +SKIP
        >>> len(ds), ds.state_dim, ds.task_ids.unique().tolist()  # doctest: +SKIP
        (100, 128, [0, 3])
    """
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}.")
    dim = LIBERO_CONTEXT_STATE_DIM if context_state_dim is None else int(context_state_dim)
    tasks = libero_suite_tasks(suite)
    keep = range(len(tasks)) if task_ids is None else [int(i) for i in task_ids]
    for task_id in keep:
        if not 0 <= task_id < len(tasks):
            raise ValueError(f"task id {task_id} out of range for {suite} ({len(tasks)} tasks).")
    if source == "init_files":
        rows = {task_id: _init_states(tasks[task_id]) for task_id in keep}
    elif source == "sampled":
        rows = {task_id: sample_libero_starts(suite, task_id, num_per_task, seed=sample_seed) for task_id in keep}
    else:
        if demo_paths is None:
            raise ValueError(
                "source='demos' needs demo_paths: the LIBERO HDF5 demonstration files "
                "(e.g. <datasets>/libero_spatial/*_demo.hdf5)."
            )
        rows = _demo_first_states(tasks, demo_paths, set(keep))
    states, ids = [], []
    for task_id, block in rows.items():
        for state in block:
            states.append(pad_state(state, dim))
            ids.append(task_id)
    if not states:
        raise ValueError(
            f"no contexts found for {suite} tasks {list(keep)} from {source}: check "
            "task_ids and demo_paths."
        )
    return ContextDataset(
        torch.stack(states),
        ids,
        [task.name for task in tasks],
        [str(task.language) for task in tasks],
        **dataset_kwargs,
    )


def sample_libero_starts(suite: str, task_id: int, n: int, *, seed: int = 0, env=None) -> list[np.ndarray]:
    """``n`` fresh starts of one task (unpadded flattened states), seeded: start ``i``
    is LIBERO's placement draw with numpy seed ``1_000_003 * seed + 7_919 * task_id + i + 1``
    (never the envs' placement seed 0).

    See :meth:`~torchrl_ript.envs.libero.LiberoContextEnv.sample_start`: only
    fixture-free scenes (``libero_object``).
    """
    own = env is None
    if own:
        env = LiberoContextEnv(suite, int(task_id), camera_size=32, wrist_camera=False)
    try:
        return [env.sample_start(1_000_003 * int(seed) + 7_919 * int(task_id) + i + 1) for i in range(int(n))]
    finally:
        if own:
            env.close()


def _init_states(task) -> np.ndarray:
    # libero is optional (scripts/install_libero.sh); libero_suite_tasks has
    # already run ensure_libero(), so importing it no longer prompts.
    from libero.libero import get_libero_path

    path = os.path.join(get_libero_path("init_states"), task.problem_folder, task.init_states_file)
    # Trusted benchmark files: pickled numpy arrays, rejected by weights_only=True.
    return np.asarray(torch.load(path, weights_only=False), dtype=np.float64)


def _demo_first_states(tasks, demo_paths, keep: set[int]) -> dict[int, list[np.ndarray]]:
    if isinstance(demo_paths, (str, os.PathLike)):
        demo_paths = [demo_paths]
    by_language = {_norm(task.language): i for i, task in enumerate(tasks)}
    by_name = {task.name: i for i, task in enumerate(tasks)}
    rows: dict[int, list[np.ndarray]] = {}
    for path in map(Path, demo_paths):
        # a demo's context_state (written by write_libero_rollout_demos: the start
        # before settling), else its first state, as the official code starts a
        # rollout from the demo's first state
        starts = read_demo_starts(path)
        task_id = _demo_task_id(starts.attrs, path, by_language, by_name)
        if task_id not in keep:
            continue
        for demo, state in zip(starts.demos, starts.states):
            if state is None:
                raise KeyError(f"{path}:data/{demo} has neither 'context_state' nor 'states'.")
            rows.setdefault(task_id, []).append(state)
    return rows


def _demo_task_id(attrs, path: Path, by_language: dict, by_name: dict) -> int:
    if "problem_info" in attrs:
        info = json.loads(attrs["problem_info"])
        language = _norm(info.get("language_instruction", ""))
        if language in by_language:
            return by_language[language]
    stem = path.stem.removesuffix("_demo")
    if stem in by_name:
        return by_name[stem]
    raise ValueError(
        f"cannot tell which task {path} belongs to: its problem_info language and file "
        "name match no task of this suite (pass files of this suite only)."
    )


def _norm(text) -> str:
    if isinstance(text, (list, tuple)):
        text = " ".join(map(str, text))
    return " ".join(str(text).lower().split())


def write_libero_rollout_demos(
    path: str | os.PathLike,
    suite: str,
    task_id: int,
    *,
    num_demos: int = 2,
    num_steps: int = 8,
    policy: str = "zero",
    init_state_ids: Sequence[int] | None = None,
    seed: int = 0,
    env=None,
) -> Path:
    """Write real LIBERO rollouts as a LIBERO-layout HDF5 demo file (for tests).

    Each demo starts from a benchmark init state (context reset, settle
    steps included) and runs ``num_steps`` zero (``policy="zero"``, gripper
    open) or uniform random (``"random"``) actions. The layout is LIBERO's:
    ``data/demo_i/obs/{agentview_rgb, eye_in_hand_rgb, joint_states,
    gripper_states, ee_pos, ee_ori, ee_states}``, ``actions``, ``states``
    (flattened MuJoCo state before each action), ``rewards``, ``dones``,
    ``context_state`` (the start, before the settle steps), and
    ``data.attrs["problem_info"]`` (JSON with ``language_instruction``) and
    ``env_args``. As in LIBERO's files, images are stored as rendered (OpenGL
    rows, upside down): the env's upright images are their 180-degree rotation.

    Keyword Args:
        env: a :class:`~torchrl_ript.envs.libero.LiberoContextEnv` of that
            task without ``action_chunk`` to reuse (built if ``None``).

    Examples:
        >>> path = write_libero_rollout_demos("/tmp/t_demo.hdf5", "libero_spatial", 0)  # doctest: +SKIP
    """
    # robosuite is optional (installed with LIBERO by scripts/install_libero.sh)
    from robosuite.utils.transform_utils import quat2axisangle

    if policy not in ("zero", "random"):
        raise ValueError(f"policy must be 'zero' or 'random', got {policy!r}.")
    own_env = env is None
    if own_env:
        env = LiberoContextEnv(suite, task_id)
    if env.action_chunk is not None:
        raise ValueError("pass an env without action_chunk: demos store one action per step.")
    contexts = libero_contexts(suite, task_ids=[task_id], context_state_dim=env.context_state_dim)
    ids = list(init_state_ids) if init_state_ids is not None else list(range(num_demos))
    generator = torch.Generator().manual_seed(seed)
    task = libero_suite_tasks(suite)[task_id]
    env_args = libero_demo_env_args(env, suite, task_id)
    try:
        with DemoWriter(
            path, task_name=task.name, language_instruction=str(task.language), env_args=env_args
        ) as writer:
            for index in ids:
                state = contexts.states[contexts.task_contexts(task_id)[index]]
                td = env.reset(context_reset_td(state[None], torch.tensor([task_id]))[0])
                td_start = td
                steps: dict[str, list] = {}
                for _ in range(num_steps):
                    _record(steps, td, env, quat2axisangle)
                    if policy == "zero":
                        action = torch.zeros(7)
                        action[-1] = -1.0
                    else:
                        action = torch.rand(7, generator=generator) * 2 - 1
                    steps.setdefault("actions", []).append(action.numpy().astype(np.float64))
                    td["action"] = action
                    td = env.step(td)["next"]
                    steps.setdefault("rewards", []).append(float(td["reward"]))
                    steps.setdefault("dones", []).append(int(td["done"]))
                    if td["done"]:
                        break
                writer.add_demo(
                    {name[4:]: np.stack(values) for name, values in steps.items() if name.startswith("obs/")},
                    actions=np.stack(steps["actions"]),
                    states=np.stack(steps["states"]),
                    rewards=np.asarray(steps["rewards"], np.float32),
                    dones=np.asarray(steps["dones"], np.uint8),
                    # the start before the settle steps (states[0] is after them)
                    context_state=td_start["context_state"][: env.true_state_dim].numpy(),
                )
    finally:
        if own_env:
            env.close()
    return Path(path)


def libero_demo_env_args(env, suite: str, task_id: int, **extra) -> dict:
    """The ``env_args`` a LIBERO demo file stores: how to rebuild the env that wrote it (plus ``extra``)."""
    return {
        "type": "libero",
        "suite": suite,
        "task_id": int(task_id),
        "camera_size": int(env.observation_spec["observation", "image"].shape[-1]),
        "placement_seed": env.placement_seed,
        "settle_steps": env.settle_steps,
        **extra,
        "image_convention": "opengl (rotate 180 degrees for the env's upright images)",
    }


def _record(steps: dict, td, env, quat2axisangle) -> None:
    eef_pos = env.robot_observation("robot0_eef_pos")
    eef_ori = np.asarray(quat2axisangle(env.robot_observation("robot0_eef_quat")), dtype=np.float64)
    values = {
        # back to LIBERO's stored orientation (the env rotates by 180 degrees)
        "obs/agentview_rgb": td["observation", "image"].permute(1, 2, 0).numpy()[::-1, ::-1],
        "obs/eye_in_hand_rgb": td["observation", "wrist_image"].permute(1, 2, 0).numpy()[::-1, ::-1],
        "obs/joint_states": env.robot_observation("robot0_joint_pos"),
        "obs/gripper_states": env.robot_observation("robot0_gripper_qpos"),
        "obs/ee_pos": eef_pos,
        "obs/ee_ori": eef_ori,
        "obs/ee_states": np.concatenate([eef_pos, eef_ori]),
        "states": env.get_sim_state(),
    }
    for name, value in values.items():
        steps.setdefault(name, []).append(np.ascontiguousarray(value))
