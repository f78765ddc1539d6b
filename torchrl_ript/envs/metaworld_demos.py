"""Record MetaWorld demonstrations with its scripted experts.

For each task, the expert (``metaworld.policies``) is rolled out in
:class:`~torchrl_ript.envs.metaworld.MetaWorldEnv` from the starts of
:func:`~torchrl_ript.envs.metaworld.sample_rand_vecs` (the generator behind
:func:`~torchrl_ript.envs.metaworld.metaworld_contexts`: demos recorded with
``--seed 0`` use the contexts of ``metaworld_contexts(..., seed=0)``, in order,
skipping failed attempts; evaluate on another seed). Optional Gaussian noise
is added to the expert's actions (QueST used 0.2 x the action scale, which is
1 here). Only successful episodes are kept, recorded up to the step success is
first reached (several experts keep moving and undo it). One HDF5 file per
task, ``<out>/<task>_demo.hdf5``, in the layout of :mod:`torchrl_ript.data.demos`:

- ``obs/<camera>_rgb`` ``[T, H, W, 3]`` uint8 (upright), ``obs/ee_pos``
  ``[T, 3]``, ``obs/gripper_states`` ``[T, 1]`` (the env's
  ``("observation", "state")`` is their concatenation, see
  :func:`metaworld_key_map`), ``obs/full_state`` ``[T, 39]`` (MetaWorld's
  observation, goal visible);
- ``actions`` (executed, noisy), ``expert_actions`` (noise-free), ``states``
  (qpos then qvel), ``rewards``, ``dones``, ``context_state`` and the demo
  attribute ``context_index`` (its row in ``metaworld_contexts``).

Usage::

    python -m torchrl_ript.envs.metaworld_demos --tasks reach-v3 pick-place-v3 \\
        --n 5 --noise 0.2 --out demos/
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from torchrl_ript.data.demos import DemoWriter
from torchrl_ript.envs.common import context_reset_td
from torchrl_ript.envs.metaworld import (
    METAWORLD_INSTRUCTIONS,
    MetaWorldEnv,
    _check_task,
    metaworld_task_names,
    sample_rand_vecs,
)

__all__ = ["ensure_metaworld_demos", "metaworld_key_map", "record_metaworld_demos", "main"]


def metaworld_key_map(camera_names: Sequence[str] = ("corner2",)) -> dict:
    """The :func:`~torchrl_ript.data.demos.read_demos` key map of these files.

    Examples:
        >>> metaworld_key_map(("corner2", "gripperPOV"))[("ee_pos", "gripper_states")]
        ('observation', 'state')
    """
    key_map: dict = {}
    for key, camera in zip(("image", "wrist_image"), camera_names):
        key_map[f"{camera}_rgb"] = ("observation", key)
    key_map[("ee_pos", "gripper_states")] = ("observation", "state")
    return key_map


def record_metaworld_demos(
    task_name: str,
    n: int,
    *,
    out: str | Path,
    noise: float = 0.0,
    seed: int = 0,
    camera_names: Sequence[str] = ("corner2",),
    image_size: int = 128,
    max_steps: int = 500,
    max_attempts: int | None = None,
    render_quality: str = "fast",
    progress: bool = True,
) -> Path:
    """Record ``n`` successful expert demos of one task into ``out/<task>_demo.hdf5``.

    Args:
        task_name: a v3 task name.
        n: number of successful demos to keep.

    Keyword Args:
        out: output folder.
        noise: std of the Gaussian noise added to each expert action, in
            units of the action scale (1). ``0`` records the clean expert.
        seed: seed of the starts (as ``metaworld_contexts(..., seed=seed)``)
            and of the noise.
        camera_names, image_size, max_steps, render_quality: as
            :class:`~torchrl_ript.envs.metaworld.MetaWorldEnv`.
        max_attempts: episodes to try before giving up (default ``3 * n + 10``).
        progress: show a tqdm progress bar.

    Returns:
        The path of the written file.

    Examples:
        >>> import tempfile
        >>> path = record_metaworld_demos("reach-v3", 1, out=tempfile.mkdtemp(),
        ...                               image_size=32, progress=False)
        >>> path.name
        'reach-v3_demo.hdf5'
    """
    from metaworld.policies import ENV_POLICY_MAP  # optional simulator: imported when used

    _check_task(task_name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}.")
    max_attempts = 3 * n + 10 if max_attempts is None else int(max_attempts)
    camera_names = tuple(camera_names)
    contexts = sample_rand_vecs(task_name, max_attempts, seed=seed)
    noise_rng = np.random.default_rng([int(seed), metaworld_task_names().index(task_name), 1])
    policy = ENV_POLICY_MAP[task_name]()
    env = MetaWorldEnv(
        task_names=[task_name],
        camera_names=camera_names,
        image_size=image_size,
        max_steps=max_steps,
        render_quality=render_quality,
    )
    path = Path(out) / f"{task_name}_demo.hdf5"
    env_args = dict(
        env="MetaWorldEnv",
        task_name=task_name,
        camera_names=list(camera_names),
        image_size=image_size,
        max_steps=max_steps,
        quest_camera=env.quest_camera,
        render_quality=render_quality,
        noise=noise,
        seed=seed,
    )
    bar = tqdm(total=n, desc=task_name, unit="demo", disable=not progress)
    try:
        with DemoWriter(
            path,
            task_name=task_name,
            language_instruction=METAWORLD_INSTRUCTIONS[task_name],
            env_args=env_args,
        ) as writer:
            attempts = 0
            while writer.num_demos < n and attempts < max_attempts:
                episode = _run_expert(env, policy, contexts[attempts], noise, noise_rng)
                attempts += 1
                bar.set_postfix(attempts=attempts)
                if episode is None:
                    continue
                writer.add_demo(**episode, attrs={"context_index": attempts - 1})
                bar.update(1)
            kept = writer.num_demos
    finally:
        bar.close()
        env.close()
    if kept < n:
        raise RuntimeError(
            f"{task_name}: only {kept} of {attempts} expert episodes succeeded, "
            f"{n} wanted; raise max_attempts or max_steps, or lower noise. "
            f"(The partial file {path} holds the {kept} successes.)"
        )
    return path


def ensure_metaworld_demos(
    task_names: Sequence[str],
    n: int,
    *,
    folder: str | Path,
    record: bool = True,
    **kwargs,
) -> list[Path]:
    """``<folder>/<task>_demo.hdf5`` for every task, recording the missing ones.

    An existing file is reused when it holds exactly ``n`` demos; one with
    another count raises (it was recorded for another setting), and so does
    a missing file when ``record=False`` (a user's demo folder).
    ``kwargs`` go to :func:`record_metaworld_demos` (noise, seed, cameras...).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> paths = ensure_metaworld_demos(["reach-v3"], 1, folder=folder, image_size=32, progress=False)
        >>> ensure_metaworld_demos(["reach-v3"], 1, folder=folder, record=False) == paths
        True
    """
    folder = Path(folder)
    paths = []
    for task in task_names:
        path = folder / f"{task}_demo.hdf5"
        if path.exists():
            with h5py.File(path, "r") as file:
                count = len(file["data"].keys()) if "data" in file else 0
            if count != n:
                raise ValueError(
                    f"{path} holds {count} demos, {n} wanted: point the demo folder elsewhere, "
                    f"delete the file, or ask for {count}."
                )
        elif record:
            record_metaworld_demos(task, n, out=folder, **kwargs)
        else:
            raise FileNotFoundError(f"no demo file {path}: record it (python -m torchrl_ript.envs.metaworld_demos).")
        paths.append(path)
    return paths


def _run_expert(env, policy, context: np.ndarray, noise: float, rng) -> dict | None:
    """One expert episode from ``context``; its arrays if it succeeds, else None."""
    td = env.reset(
        context_reset_td(torch.from_numpy(context).reshape(1, -1), torch.tensor([0]))[0]
    )
    cameras = {
        key: f"{camera}_rgb" for key, camera in zip(("image", "wrist_image"), env.camera_names)
    }
    steps: dict[str, list] = {name: [] for name in ("full", "states", "actions", "expert")}
    images: dict[str, list] = {name: [] for name in cameras.values()}
    sim = env.sim
    while True:
        raw = env.raw_observation
        expert = np.asarray(policy.get_action(raw), dtype=np.float64)
        action = expert + noise * rng.standard_normal(expert.shape) if noise else expert
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        steps["full"].append(raw.copy())
        steps["states"].append(np.concatenate([sim.data.qpos, sim.data.qvel]))
        steps["actions"].append(action)
        steps["expert"].append(expert.astype(np.float32))
        for key, name in cameras.items():
            images[name].append(td["observation", key].permute(1, 2, 0).numpy())
        td = env.step(td.set("action", torch.from_numpy(action)))["next"]
        if bool(td["success"]):
            break
        if bool(td["done"]):
            return None
    full = np.stack(steps["full"])
    obs = {name: np.stack(frames) for name, frames in images.items()}
    obs.update(ee_pos=full[:, :3], gripper_states=full[:, 3:4], full_state=full)
    return dict(
        obs=obs,
        actions=np.stack(steps["actions"]),
        states=np.stack(steps["states"]),
        context_state=context,
        extras={"expert_actions": np.stack(steps["expert"])},
    )


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_ript.envs.metaworld_demos",
        description="Record successful MetaWorld scripted-expert demos (one HDF5 per task).",
    )
    parser.add_argument("--tasks", nargs="+", required=True, help="v3 task names, e.g. reach-v3")
    parser.add_argument("--n", type=int, default=5, help="successful demos per task")
    parser.add_argument("--noise", type=float, default=0.0, help="action noise std (x action scale)")
    parser.add_argument("--out", default="demos", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starts and the noise")
    parser.add_argument("--cameras", nargs="+", default=["corner2"], help="at most 2 cameras")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--max-attempts", type=int, default=None)
    parser.add_argument("--render-quality", choices=("fast", "high"), default="fast")
    args = parser.parse_args(argv)
    paths = []
    for task in args.tasks:
        paths.append(
            record_metaworld_demos(
                task,
                args.n,
                out=args.out,
                noise=args.noise,
                seed=args.seed,
                camera_names=args.cameras,
                image_size=args.image_size,
                max_steps=args.max_steps,
                max_attempts=args.max_attempts,
                render_quality=args.render_quality,
            )
        )
        print(f"wrote {paths[-1]}")
    return paths


if __name__ == "__main__":
    main()
