"""Robomimic/LIBERO-style HDF5 demonstrations, shared by MetaWorld and LIBERO.

File layout (one file per task, as LIBERO's datasets)::

    data/                              group
        attrs: task_name               str
               language_instruction    str
               problem_info            JSON str (LIBERO; optional, holds
                                       "language_instruction" too)
               env_args                JSON str (optional: how the env was built)
               total                   int, number of steps over all demos
        demo_0/                        group, attrs: num_samples = T
            obs/<name>                 [T, ...] one dataset per observation;
                                       images HWC uint8 ([T, H, W, 3]) as LIBERO
            actions                    [T, A] float
            states                     [T, S] float64 simulator state
                                       (MetaWorld: qpos then qvel)
            rewards                    [T] float (1 on the last, successful step)
            dones                      [T] uint8 (1 on the last step)
            context_state              [D] float64: the start to replay with
                                       the env's context reset (MetaWorld: the
                                       padded rand_vec). Optional: LIBERO files
                                       lack it and their context is states[0].
        demo_1/ ...

Step ``t`` holds the observation *before* action ``t`` (robomimic's
convention). Every reader of such files goes through this module:
:func:`read_demos` reads whole demos, :func:`read_demo_starts` only each
demo's start (its ``context_state``, else its first state) and the ``data``
attributes (what :meth:`~torchrl_ript.data.ContextDataset.from_demonstrations`
and :func:`~torchrl_ript.envs.libero.libero_contexts` build contexts from),
:func:`read_demo_attrs` only those attributes.

Reading maps file observation names to TorchRL's canonical VLA keys with a
key map; several file names mapped to one key are concatenated on the last
dim (LIBERO's state is ``joint_states`` + ``gripper_states``), and images
become CHW.

Examples:
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reach.hdf5")
    >>> with DemoWriter(path, task_name="reach", language_instruction="reach the goal") as w:
    ...     _ = w.add_demo(
    ...         {"rgb": np.zeros((3, 8, 8, 3), np.uint8), "eef": np.zeros((3, 4))},
    ...         actions=np.zeros((3, 4)), context_state=np.ones(6))
    >>> demos = read_demos(path, key_map={"rgb": ("observation", "image"),
    ...                                   "eef": ("observation", "state")})
    >>> demos.demos[0]["observation", "image"].shape, demos.instruction
    (torch.Size([3, 3, 8, 8]), 'reach the goal')
    >>> bc = demos_to_bc_dataset([demos], chunk_size=2)
    >>> bc["vla_action", "chunk"].shape, bc["action_is_pad"][-1].tolist()
    (torch.Size([3, 2, 4]), [False, True])
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tensordict import TensorDict
from torchrl.envs.transforms import ActionChunkTransform

__all__ = [
    "DemoFile",
    "DemoStarts",
    "DemoWriter",
    "LIBERO_KEY_MAP",
    "demos_to_bc_dataset",
    "read_demo_attrs",
    "read_demo_starts",
    "read_demos",
]

#: LIBERO's observation names in TorchRL's canonical VLA schema.
LIBERO_KEY_MAP: dict = {
    "agentview_rgb": ("observation", "image"),
    "eye_in_hand_rgb": ("observation", "wrist_image"),
    ("joint_states", "gripper_states"): ("observation", "state"),
}


class DemoWriter:
    """Write demonstrations of one task into a robomimic/LIBERO-style HDF5 file.

    Args:
        path: the file to create (overwritten; parent folders are created).

    Keyword Args:
        task_name (str): stored as ``data.attrs["task_name"]``.
        language_instruction (str): stored as ``data.attrs["language_instruction"]``
            and inside a LIBERO-style ``problem_info`` JSON attribute.
        env_args (dict, optional): JSON-serialisable env settings, stored as
            ``data.attrs["env_args"]``.
        compression (str, optional): h5py compression of the image datasets
            (``"gzip"`` by default; ``None`` for none).

    Examples:
        >>> import numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "t.hdf5")
        >>> with DemoWriter(path, task_name="t", language_instruction="do it") as writer:
        ...     writer.add_demo({"s": np.zeros((2, 3))}, actions=np.zeros((2, 4)))
        'demo_0'
    """

    def __init__(
        self,
        path: str | Path,
        *,
        task_name: str,
        language_instruction: str,
        env_args: dict | None = None,
        compression: str | None = "gzip",
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.compression = compression
        self._file = h5py.File(self.path, "w")
        self._data = self._file.create_group("data")
        self._data.attrs["task_name"] = str(task_name)
        self._data.attrs["language_instruction"] = str(language_instruction)
        self._data.attrs["problem_info"] = json.dumps(
            {"task_name": str(task_name), "language_instruction": str(language_instruction)}
        )
        if env_args is not None:
            self._data.attrs["env_args"] = json.dumps(env_args)
        self._data.attrs["total"] = 0
        self.num_demos = 0

    def add_demo(
        self,
        obs: Mapping[str, np.ndarray],
        *,
        actions,
        states=None,
        rewards=None,
        dones=None,
        context_state=None,
        extras: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, object] | None = None,
    ) -> str:
        """Append one demo of ``T`` steps; returns its group name (``demo_i``).

        ``obs`` maps names to ``[T, ...]`` arrays (images ``[T, H, W, 3]``
        uint8). ``rewards`` and ``dones`` default to 0 everywhere but 1 on the
        last step (a successful demo); ``states`` to none. ``extras`` are
        further per-demo datasets (e.g. ``expert_actions``), ``attrs`` further
        attributes of the demo group.
        """
        actions = np.asarray(actions)
        length = actions.shape[0]
        if length == 0:
            raise ValueError("a demo needs at least one step; got empty actions.")
        if not obs:
            raise ValueError("obs is empty: give at least one observation array.")
        for name, value in obs.items():
            if np.shape(value)[0] != length:
                raise ValueError(
                    f"obs[{name!r}] has {np.shape(value)[0]} steps but actions has "
                    f"{length}: store the observation before each action."
                )
        if rewards is None:
            rewards = np.zeros(length, np.float32)
            rewards[-1] = 1.0
        if dones is None:
            dones = np.zeros(length, np.uint8)
            dones[-1] = 1
        name = f"demo_{self.num_demos}"
        group = self._data.create_group(name)
        group.attrs["num_samples"] = length
        for key, value in obs.items():
            value = np.asarray(value)
            is_image = value.dtype == np.uint8 and value.ndim == 4
            group.create_dataset(
                f"obs/{key}", data=value, compression=self.compression if is_image else None
            )
        group.create_dataset("actions", data=actions)
        group.create_dataset("rewards", data=np.asarray(rewards).reshape(length))
        group.create_dataset("dones", data=np.asarray(dones).astype(np.uint8).reshape(length))
        if states is not None:
            group.create_dataset("states", data=np.asarray(states, dtype=np.float64))
        if context_state is not None:
            group.create_dataset(
                "context_state", data=np.asarray(context_state, dtype=np.float64).reshape(-1)
            )
        for key, value in (extras or {}).items():
            group.create_dataset(key, data=np.asarray(value))
        for key, value in (attrs or {}).items():
            group.attrs[key] = value
        self._data.attrs["total"] = int(self._data.attrs["total"]) + length
        self.num_demos += 1
        return name

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class DemoFile:
    """The demos of one file: per-demo TensorDicts plus the file's metadata.

    Attributes:
        demos: one TensorDict per demo, batch ``[T]``, with the mapped
            observations, ``"action"`` ``[T, A]`` float32, ``"reward"``
            ``[T, 1]`` float32, ``"done"`` ``[T, 1]`` bool, and ``"states"``
            ``[T, S]`` float64 when the file has them.
        contexts: ``[N, D]`` float64 ``context_state`` of each demo (``states[0]``
            when the file has no ``context_state``), or ``None`` if neither.
        task_name, instruction: from the ``data`` attributes.
        path: the file read.
    """

    demos: list[TensorDict]
    contexts: torch.Tensor | None
    task_name: str
    instruction: str
    path: Path
    env_args: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.demos)


def read_demos(
    path: str | Path,
    *,
    key_map: Mapping | None = None,
    rotate_images_180: bool = False,
) -> DemoFile:
    """Read a demo file into per-demo TensorDicts in the canonical VLA schema.

    Args:
        path: an HDF5 file in the layout of this module.

    Keyword Args:
        key_map (dict, optional): file observation name -> TensorDict key,
            e.g. ``{"corner2_rgb": ("observation", "image")}``. A key may be a
            tuple of names (``("joint_states", "gripper_states")``), and
            several entries may share a target: their arrays are concatenated
            on the last dim, in key-map order. ``[T, H, W, 3]`` uint8 arrays
            become ``[T, 3, H, W]``. Defaults to every ``obs/<name>`` as
            ``("observation", name)``.
        rotate_images_180 (bool): rotate images by 180 degrees. LIBERO's files
            store camera frames as rendered (upside down); its envs, TorchRL's
            ``LiberoEnv`` and :class:`~torchrl_ript.envs.libero.LiberoContextEnv`
            show them upright: pass ``True`` for LIBERO files so SFT sees what
            the policy will see. Defaults to ``False``.

    Examples:
        >>> # see the module docstring for a round trip
    """
    path = Path(path)
    demos, contexts = [], []
    with _demo_data(path) as data:
        task_name, instruction = _task_attrs(data.attrs, path)
        env_args = json.loads(data.attrs["env_args"]) if "env_args" in data.attrs else {}
        for demo in _demo_names(data):
            group = data[demo]
            demos.append(_read_demo(group, key_map, f"{path}:data/{demo}", rotate_images_180))
            contexts.append(_first_state(group))
    if not demos:
        raise ValueError(f"{path} holds no demos under 'data'.")
    context = (
        torch.from_numpy(np.stack(contexts)) if all(c is not None for c in contexts) else None
    )
    return DemoFile(demos, context, task_name, instruction, path, env_args)


@dataclass
class DemoStarts:
    """Where each demo of one file starts, and the file's metadata (no observations read).

    Attributes:
        path: the file read.
        attrs: the attributes of its ``data`` group (``task_name``,
            ``language_instruction``, ``problem_info``, ``env_args``, ...).
        demos: the demo group names, in index order (``demo_0``, ``demo_1``, ...).
        states: per demo, its ``context_state`` if stored, else the first row
            of its state dataset, flattened to float64; ``None`` when it has
            neither (the caller decides whether that is an error).
    """

    path: Path
    attrs: dict
    demos: list[str]
    states: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.demos)


def read_demo_starts(path: str | Path, *, state_key: str = "states") -> DemoStarts:
    """Read the start of every demo of a file (the contexts to replay them from).

    A demo's start is its ``context_state`` dataset when the writer stored one
    (MetaWorld stores its ``rand_vec``; LIBERO rollouts the state before the
    settle steps), else ``<state_key>[0]`` (LIBERO's own files: the official
    RIPT code starts a rollout from the demo's first state).

    Args:
        path: an HDF5 file in the layout of this module.

    Keyword Args:
        state_key (str): the per-step state dataset of each demo. Defaults to
            ``"states"``.

    Examples:
        >>> import numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "t.hdf5")
        >>> with DemoWriter(path, task_name="t", language_instruction="do it") as writer:
        ...     _ = writer.add_demo({"s": np.zeros((2, 3))}, actions=np.zeros((2, 4)),
        ...                         states=np.full((2, 5), 7.0))
        ...     _ = writer.add_demo({"s": np.zeros((1, 3))}, actions=np.zeros((1, 4)),
        ...                         context_state=np.ones(2))
        >>> starts = read_demo_starts(path)
        >>> starts.demos, [s.tolist() for s in starts.states], starts.attrs["task_name"]
        (['demo_0', 'demo_1'], [[7.0, 7.0, 7.0, 7.0, 7.0], [1.0, 1.0]], 't')
    """
    path = Path(path)
    with _demo_data(path) as data:
        names = _demo_names(data)
        return DemoStarts(
            path,
            dict(data.attrs),
            names,
            [_first_state(data[name], state_key) for name in names],
        )


def demos_to_bc_dataset(
    files: Sequence[DemoFile],
    *,
    chunk_size: int = 1,
    task_names: Sequence[str] | None = None,
) -> TensorDict:
    """Flatten demo files into one behaviour-cloning TensorDict of steps.

    Each row is one step: its observations, ``"action"``, the action chunk
    ``("vla_action", "chunk")`` ``[chunk_size, A]`` starting at that step and
    its padding mask ``"action_is_pad"`` (steps past the demo's end repeat
    its last action and are flagged), built with TorchRL's
    :class:`~torchrl.envs.transforms.ActionChunkTransform`. Rows also carry
    ``"task_id"`` ``[1]`` (index into ``task_names``, default the files' task
    names in order of appearance), ``"demo_id"`` ``[1]`` (running index) and
    ``"language_instruction"``.

    Examples:
        >>> # see the module docstring
    """
    if not files:
        raise ValueError("no demo files given: pass the DemoFile objects of read_demos.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    names = list(task_names) if task_names is not None else []
    if task_names is None:
        for file in files:
            if file.task_name not in names:
                names.append(file.task_name)
    chunker = ActionChunkTransform(chunk_size, done_key=None)
    rows, demo_id = [], 0
    for file in files:
        if file.task_name not in names:
            raise ValueError(
                f"{file.path} is task {file.task_name!r}, not in task_names {names}: add it."
            )
        task_id = names.index(file.task_name)
        for demo in file.demos:
            steps = chunker(demo.exclude("states").clone())
            length = steps.shape[0]
            steps["task_id"] = torch.full((length, 1), task_id, dtype=torch.int64)
            steps["demo_id"] = torch.full((length, 1), demo_id, dtype=torch.int64)
            steps.set_non_tensor("language_instruction", file.instruction)
            rows.append(steps)
            demo_id += 1
    return torch.cat(rows)


def read_demo_attrs(path: str | Path) -> dict:
    """The attributes of a demo file's ``data`` group (task, instruction, ...), nothing else.

    Examples:
        >>> import numpy as np, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "t.hdf5")
        >>> with DemoWriter(path, task_name="t", language_instruction="do it") as writer:
        ...     _ = writer.add_demo({"s": np.zeros((2, 3))}, actions=np.zeros((2, 4)))
        >>> read_demo_attrs(path)["language_instruction"]
        'do it'
    """
    with _demo_data(Path(path)) as data:
        return dict(data.attrs)


@contextlib.contextmanager
def _demo_data(path: Path) -> Iterator[h5py.Group]:
    """The ``data`` group of a demo file, open for reading."""
    if not path.exists():
        raise FileNotFoundError(f"demonstration file {path} does not exist.")
    with h5py.File(path, "r") as file:
        if "data" not in file:
            raise KeyError(f"{path} has no 'data' group: not a robomimic/LIBERO demo file.")
        yield file["data"]


def _demo_names(data) -> list[str]:
    return sorted(data.keys(), key=_demo_index)


def _first_state(group, state_key: str = "states") -> np.ndarray | None:
    if "context_state" in group:
        return np.asarray(group["context_state"][()], dtype=np.float64).reshape(-1)
    if state_key in group:
        return np.asarray(group[state_key][0], dtype=np.float64).reshape(-1)
    return None


def _read_demo(group, key_map: Mapping | None, where: str, rotate_images_180: bool = False) -> TensorDict:
    if "obs" not in group or "actions" not in group:
        raise KeyError(f"{where} lacks 'obs' or 'actions': not a robomimic/LIBERO demo.")
    obs = group["obs"]
    if key_map is None:
        key_map = {name: ("observation", name) for name in obs.keys()}
    parts: dict = {}
    for names, target in key_map.items():
        for name in (names,) if isinstance(names, str) else names:
            if name not in obs:
                raise KeyError(
                    f"{where}/obs has no {name!r} (it has {sorted(obs.keys())}): "
                    "fix key_map."
                )
            array = _as_tensor(obs[name][()])
            if rotate_images_180 and array.dtype == torch.uint8 and array.ndim == 4:
                array = array.flip(-2, -1)
            parts.setdefault(target, []).append(array)
    actions = torch.as_tensor(np.asarray(group["actions"][()]), dtype=torch.float32)
    length = actions.shape[0]
    out = TensorDict({"action": actions}, batch_size=[length])
    for target, arrays in parts.items():
        out[target] = arrays[0] if len(arrays) == 1 else torch.cat(
            [a.reshape(length, -1) for a in arrays], dim=-1
        )
    out["reward"] = _per_step(group, "rewards", length, torch.float32)
    out["done"] = _per_step(group, "dones", length, torch.bool)
    if "states" in group:
        out["states"] = torch.as_tensor(np.asarray(group["states"][()], dtype=np.float64))
    return out


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] in (1, 3, 4):
        return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    if array.dtype == np.float64:
        array = array.astype(np.float32)  # VLA schema: float32 observations
    return torch.from_numpy(np.ascontiguousarray(array))


def _per_step(group, name: str, length: int, dtype) -> torch.Tensor:
    if name not in group:
        values = torch.zeros(length, 1, dtype=dtype)
        values[-1] = 1
        return values
    return torch.as_tensor(np.asarray(group[name][()])).reshape(length, 1).to(dtype)


def _task_attrs(attrs, path: Path) -> tuple[str, str]:
    info = json.loads(attrs["problem_info"]) if "problem_info" in attrs else {}
    name = attrs.get("task_name", info.get("task_name", path.stem.removesuffix("_demo")))
    instruction = attrs.get("language_instruction", info.get("language_instruction", name))
    return str(name), str(instruction)


def _demo_index(name: str) -> int:
    try:
        return int(name.rsplit("_", 1)[-1])
    except ValueError:
        return 0
