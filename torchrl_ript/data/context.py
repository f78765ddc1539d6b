"""The context dataset D_c: where every RIPT rollout group starts."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_ript.data.demos import read_demo_starts
from torchrl_ript.data.samplers import SAMPLERS, ContextSampler, make_sampler

__all__ = ["ContextDataset"]


class ContextDataset:
    """Initial contexts ``c = (task, instruction, initial simulator state)``.

    One row per context. The state is the env's own encoding of a start
    (see :mod:`torchrl_ript.envs.common`); all rows share its size ``D``.

    Args:
        states: ``[N, D]`` initial states (anything ``torch.as_tensor`` takes).
        task_ids: ``[N]`` index of each row's task in ``task_names``.
        task_names: the task of each id.
        instructions: the language instruction of each task (defaults to the
            task names).

    Keyword Args:
        first_observations (TensorDictBase, optional): ``[N]`` first
            observations, when known (e.g. read from demonstrations).
        sampler (str or ContextSampler): which rows are drawn (see
            :mod:`torchrl_ript.data.samplers`). ``"uniform"`` draws rows
            uniformly; ``"per_task"`` first draws a task uniformly, then a row
            of that task, so that tasks with more contexts are not favoured;
            ``"adaptive"`` (or an :class:`~torchrl_ript.data.samplers.AdaptiveSampler`
            with your settings) favours contexts whose rollout groups are
            likely to have mixed outcomes, from the outcomes given to
            :meth:`record_outcomes`. Defaults to ``"uniform"``.
        noise_std (float or sequence of float): standard deviation of Gaussian
            noise added to each *drawn* state (the paper's Fig. 7 robustness
            study: group members then start from slightly different states).
            A sequence gives one std per state dimension (zero leaves that
            dimension exact). Defaults to ``0.0`` (exact contexts).
        project (callable, optional): ``project(noisy, exact, task_ids) ->
            states`` maps noisy states to valid starts of the simulator (e.g.
            :class:`~torchrl_ript.envs.metaworld.MetaWorldContextProjection`);
            used after ``noise_std`` and by :meth:`jitter`. Must pickle.
        seed (int, optional): seed of the dataset's sampling generator.

    Examples:
        >>> ds = ContextDataset(
        ...     [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]],
        ...     task_ids=[0, 0, 1],
        ...     task_names=["reach", "push"],
        ...     seed=0,
        ... )
        >>> len(ds), ds.state_dim, ds.num_tasks
        (3, 2, 2)
        >>> batch = ds.sample(4)
        >>> batch["state"].shape, batch["task_id"].shape
        (torch.Size([4, 2]), torch.Size([4]))
        >>> ds.instruction(1)
        'push'
    """

    def __init__(
        self,
        states,
        task_ids,
        task_names: Sequence[str],
        instructions: Sequence[str] | None = None,
        *,
        first_observations: TensorDictBase | None = None,
        sampler: str | ContextSampler = "uniform",
        noise_std: float | Sequence[float] = 0.0,
        project=None,
        seed: int | None = None,
    ) -> None:
        states = _as_state_matrix(states)
        task_ids = torch.as_tensor(task_ids, dtype=torch.int64).reshape(-1)
        if states.shape[0] == 0:
            raise ValueError(
                "ContextDataset is empty: give at least one initial state "
                "(from demonstrations, benchmark init files or a list)."
            )
        if task_ids.shape[0] != states.shape[0]:
            raise ValueError(
                f"{states.shape[0]} states but {task_ids.shape[0]} task ids: give "
                "one task id per state."
            )
        task_names = [str(name) for name in task_names]
        if not task_names:
            raise ValueError("task_names is empty: name at least one task.")
        if task_ids.min() < 0 or task_ids.max() >= len(task_names):
            raise ValueError(
                f"task ids must lie in [0, {len(task_names) - 1}] (one per name in "
                f"task_names), got range [{int(task_ids.min())}, {int(task_ids.max())}]."
            )
        if instructions is None:
            instructions = list(task_names)
        instructions = [str(text) for text in instructions]
        if len(instructions) != len(task_names):
            raise ValueError(
                f"{len(instructions)} instructions for {len(task_names)} tasks: give "
                "one instruction per task."
            )
        if first_observations is not None and first_observations.shape[:1] != (
            states.shape[0],
        ):
            raise ValueError(
                "first_observations must have one row per state: "
                f"got batch size {tuple(first_observations.batch_size)} for "
                f"{states.shape[0]} states."
            )
        context_sampler = make_sampler(sampler)
        if project is not None and not callable(project):
            raise TypeError(f"project must be callable(noisy, exact, task_ids), got {type(project).__name__}.")
        self.states = states
        self.task_ids = task_ids
        self.task_names = task_names
        self.instructions = instructions
        self.first_observations = first_observations
        self.context_sampler = context_sampler
        self.noise_std = _as_noise(noise_std, states.shape[1])
        self.project = project
        self.generator = torch.Generator()
        self.seed = seed
        if seed is not None:
            self.generator.manual_seed(seed)

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_list(cls, contexts: Iterable[dict], **kwargs) -> ContextDataset:
        """Build from dicts ``{"task": name, "state": [...], "instruction": str?}``.

        Examples:
            >>> ds = ContextDataset.from_list([
            ...     {"task": "open drawer", "state": [0.1, 0.2]},
            ...     {"task": "close drawer", "state": [0.3, 0.4],
            ...      "instruction": "close the drawer"},
            ... ])
            >>> ds.task_names, ds.instruction(1)
            (['open drawer', 'close drawer'], 'close the drawer')
        """
        contexts = list(contexts)
        if not contexts:
            raise ValueError("from_list got no contexts: give at least one.")
        names: list[str] = []
        instructions: dict[str, str] = {}
        task_ids, states = [], []
        for i, context in enumerate(contexts):
            missing = {"task", "state"} - set(context)
            if missing:
                raise KeyError(f"context {i} lacks {sorted(missing)}: give 'task' and 'state'.")
            name = str(context["task"])
            if name not in instructions:
                names.append(name)
                instructions[name] = str(context.get("instruction", name))
            task_ids.append(names.index(name))
            states.append(np.asarray(context["state"], dtype=np.float64).reshape(-1))
        return cls(
            _stack_states(states),
            task_ids,
            names,
            [instructions[name] for name in names],
            **kwargs,
        )

    @classmethod
    def from_init_states(
        cls,
        states_per_task: dict[str, object],
        instructions: dict[str, str] | None = None,
        **kwargs,
    ) -> ContextDataset:
        """Build from ``{task_name: [n_i, D] states}``, e.g. benchmark init files.

        Examples:
            >>> ds = ContextDataset.from_init_states({"a": np.zeros((3, 2)), "b": np.ones((2, 2))})
            >>> len(ds), ds.task_ids.tolist()
            (5, [0, 0, 0, 1, 1])
        """
        if not states_per_task:
            raise ValueError("from_init_states got no tasks: give at least one.")
        names = list(states_per_task)
        rows, ids = [], []
        for task_id, name in enumerate(names):
            block = _as_state_matrix(states_per_task[name])
            if block.shape[0] == 0:
                raise ValueError(f"task {name!r} has no initial states.")
            rows.append(block)
            ids += [task_id] * block.shape[0]
        instructions = instructions or {}
        return cls(
            _concat_checked(rows, names),
            ids,
            names,
            [instructions.get(name, name) for name in names],
            **kwargs,
        )

    @classmethod
    def from_demonstrations(
        cls,
        paths: str | Path | Sequence[str | Path],
        *,
        state_key: str = "states",
        **kwargs,
    ) -> ContextDataset:
        """First state of every demo in robomimic/LIBERO-style HDF5 files.

        Each file holds ``data/demo_i/<state_key>`` (``[T, D]``); the context is
        its first row, or ``data/demo_i/context_state`` when a writer stored
        the context in another encoding (MetaWorld stores its ``rand_vec``).
        The task name and instruction come from the ``data`` group attributes
        ``task_name`` / ``language_instruction``, or LIBERO's ``problem_info``
        JSON, or else the file name.

        Examples:
            >>> import h5py, tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "pick_demo.hdf5")
            >>> with h5py.File(path, "w") as f:
            ...     g = f.create_group("data")
            ...     g.attrs["language_instruction"] = "pick the cube"
            ...     for i in range(2):
            ...         _ = g.create_dataset(f"demo_{i}/states", data=np.full((5, 3), i, float))
            >>> ds = ContextDataset.from_demonstrations(path)
            >>> len(ds), ds.instruction(0), ds.states[1].tolist()
            (2, 'pick the cube', [1.0, 1.0, 1.0])
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        per_task: dict[str, list[np.ndarray]] = {}
        instructions: dict[str, str] = {}
        for path in paths:
            starts = read_demo_starts(path, state_key=state_key)
            name, instruction = _demo_task(starts.attrs, starts.path)
            if not starts.demos:
                raise ValueError(f"{starts.path} holds no demos under 'data'.")
            for demo, state in zip(starts.demos, starts.states):
                if state is None:
                    raise KeyError(
                        f"{starts.path}:data/{demo} has neither 'context_state' nor "
                        f"{state_key!r}: pass state_key= naming its state dataset."
                    )
                per_task.setdefault(name, []).append(state)
            instructions.setdefault(name, instruction)
        return cls.from_init_states(
            {name: _stack_states(rows) for name, rows in per_task.items()},
            instructions,
            **kwargs,
        )

    # -- access -------------------------------------------------------------
    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def state_dim(self) -> int:
        return self.states.shape[1]

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def instruction(self, task_id: int) -> str:
        return self.instructions[int(task_id)]

    def task_contexts(self, task: int | str) -> torch.Tensor:
        """Indices of the contexts of one task (by id or name)."""
        task_id = self.task_names.index(task) if isinstance(task, str) else int(task)
        return torch.nonzero(self.task_ids == task_id).reshape(-1)

    def __getitem__(self, index) -> TensorDict:
        """Rows as a TensorDict ``{context_id, task_id, state}`` (no noise)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return TensorDict(
            {
                "context_id": index,
                "task_id": self.task_ids[index],
                "state": self.states[index],
            },
            batch_size=index.shape,
        )

    def sample(
        self,
        n: int,
        *,
        task: int | str | None = None,
        generator: torch.Generator | None = None,
    ) -> TensorDict:
        """Draw ``n`` context rows (with replacement) with the seeded generator.

        Noise, if configured, is *not* added here: the contexts stay exact
        identifiers; :meth:`initial_states` adds it per rollout.
        """
        generator = self.generator if generator is None else generator
        if task is not None:
            pool = self.task_contexts(task)
            if pool.numel() == 0:
                raise ValueError(f"task {task!r} has no contexts in this dataset.")
            pick = torch.randint(pool.numel(), (n,), generator=generator)
            return self[pool[pick]]
        return self[self.context_sampler.draw(self, n, generator)]

    @property
    def sampler(self) -> str:
        """The name of the context sampler (``"uniform"``, ``"per_task"``, ``"adaptive"``...)."""
        return self.context_sampler.name

    def record_outcomes(self, context_ids, successes) -> None:
        """Report finished rollouts (their context ids and successes) to the sampler.

        Only stateful samplers (``"adaptive"``) use them; see
        :class:`~torchrl_ript.transforms.ContextOutcomeFeed` to feed them
        from a collector's replay buffer.
        """
        self.context_sampler.record(context_ids, successes)

    def initial_states(
        self, context_ids: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The states to reset to, one per id, with the configured noise added."""
        context_ids = torch.as_tensor(context_ids, dtype=torch.int64)
        states = self.states[context_ids]
        if self.noise_std is None:
            return states.clone()
        generator = self.generator if generator is None else generator
        noise = torch.randn(states.shape, generator=generator, dtype=torch.float64)
        noisy = states + noise * self.noise_std
        if self.project is not None:
            noisy = self.project(noisy, states, self.task_ids[context_ids])
        return noisy

    def jitter(
        self,
        copies: int,
        noise_std: float | Sequence[float],
        *,
        seed: int = 0,
        keep_exact: bool = True,
    ) -> ContextDataset:
        """A dataset of ``copies`` fixed noisy variants of every context.

        Unlike ``noise_std`` (fresh noise per rollout, so group members start
        apart), each variant here is an exact context of its own: the K
        rollouts of a group share it, leave-one-out advantages compare like
        with like, and samplers (e.g. ``"adaptive"``) can learn per variant.
        Built for few-demo RIPT: the contexts around a demo's start widen
        what the policy practises on (the paper's Fig. 6-7). The dataset's
        ``project`` (if any) makes each variant a valid start.

        Args:
            copies: variants per context (``>= 1``).
            noise_std: Gaussian std (scalar or per state dimension).

        Keyword Args:
            seed: seed of the noise.
            keep_exact: the first variant of each context is the exact
                context itself. Defaults to ``True``.

        Returns:
            A dataset ``copies`` times as long, rows grouped per source
            context; the same tasks, sampler kind (fresh), ``project`` and
            per-draw ``noise_std``.

        Examples:
            >>> ds = ContextDataset([[0.0, 0.0], [5.0, 5.0]], [0, 1], ["a", "b"])
            >>> more = ds.jitter(3, 0.1, seed=0)
            >>> len(more), more.task_ids.tolist(), more.states[0].tolist()
            (6, [0, 0, 0, 1, 1, 1], [0.0, 0.0])
            >>> bool((more.states[4] - 5).abs().max() < 1)
            True
        """
        if int(copies) < 1:
            raise ValueError(f"copies must be >= 1, got {copies}.")
        std = _as_noise(noise_std, self.state_dim)
        exact = self.states.repeat_interleave(int(copies), dim=0)
        task_ids = self.task_ids.repeat_interleave(int(copies))
        states = exact.clone()
        if std is not None:
            generator = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(exact.shape, generator=generator, dtype=torch.float64) * std
            if keep_exact:
                noise[:: int(copies)] = 0.0
            states = exact + noise
            if self.project is not None:
                states = self.project(states, exact, task_ids)
        first = None
        if self.first_observations is not None and (std is None):
            first = self.first_observations[torch.arange(len(self)).repeat_interleave(int(copies))]
        return ContextDataset(
            states, task_ids, self.task_names, self.instructions, first_observations=first,
            sampler=self.context_sampler.fresh(),
            noise_std=0.0 if self.noise_std is None else self.noise_std.tolist(),
            project=self.project, seed=self.seed,
        )

    def matches(self, other: ContextDataset, *, atol: float = 1e-9) -> torch.Tensor:
        """``[len(self)]`` bool: rows equal (same task name, states within ``atol``) to a row of ``other``.

        Use it to check that held-out evaluation contexts are not the
        contexts the policy was trained or fine-tuned on.

        Examples:
            >>> a = ContextDataset([[0.0], [1.0]], [0, 0], ["t"])
            >>> b = ContextDataset([[1.0], [2.0]], [0, 0], ["t"])
            >>> a.matches(b).tolist()
            [False, True]
        """
        out = torch.zeros(len(self), dtype=torch.bool)
        for task_id, name in enumerate(self.task_names):
            if name not in other.task_names:
                continue
            mine = self.task_contexts(task_id)
            theirs = other.states[other.task_contexts(name)]
            if mine.numel() == 0 or theirs.shape[0] == 0 or theirs.shape[1] != self.state_dim:
                continue
            close = (self.states[mine][:, None, :] - theirs[None]).abs().amax(-1) <= atol
            out[mine] = close.any(-1)
        return out

    def split(self, held_out_per_task: int, *, seed: int = 0) -> tuple[ContextDataset, ContextDataset]:
        """Split into (train, held-out) with ``held_out_per_task`` rows per task."""
        generator = torch.Generator().manual_seed(seed)
        held = []
        for task_id in range(self.num_tasks):
            pool = self.task_contexts(task_id)
            if pool.numel() <= held_out_per_task:
                raise ValueError(
                    f"task {self.task_names[task_id]!r} has {pool.numel()} contexts, "
                    f"cannot hold out {held_out_per_task} and keep any for training."
                )
            held.append(pool[torch.randperm(pool.numel(), generator=generator)[:held_out_per_task]])
        held = torch.cat(held).sort().values
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[held] = False
        return self.subset(torch.nonzero(keep).reshape(-1)), self.subset(held)

    def subset(self, index) -> ContextDataset:
        index = torch.as_tensor(index, dtype=torch.int64)
        return ContextDataset(
            self.states[index],
            self.task_ids[index],
            self.task_names,
            self.instructions,
            first_observations=None
            if self.first_observations is None
            else self.first_observations[index],
            sampler=self.context_sampler.fresh(),  # row ids change: estimates do not carry over
            noise_std=0.0 if self.noise_std is None else self.noise_std.tolist(),
            project=self.project,
            seed=self.seed,
        )

    def __getstate__(self) -> dict:
        # torch.Generator does not survive torch.multiprocessing's pickling
        # (its state is shared as an fd-backed storage): send plain bytes.
        state = dict(self.__dict__)
        state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: dict) -> None:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8))
        state["generator"] = generator
        self.__dict__.update(state)

    # -- persistence ----------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save to one file (``torch.save``), loadable with :meth:`load`."""
        torch.save(
            {
                "states": self.states,
                "task_ids": self.task_ids,
                "task_names": self.task_names,
                "instructions": self.instructions,
                "first_observations": None
                if self.first_observations is None
                else self.first_observations.to_dict(),
                "sampler": self.sampler,
                "sampler_config": self.context_sampler.config(),
                "sampler_state": self.context_sampler.state_dict(),
                "sampler_class": None
                if self.sampler in SAMPLERS and type(self.context_sampler) is SAMPLERS[self.sampler]
                else self.context_sampler.fresh(),
                "noise_std": None if self.noise_std is None else self.noise_std.tolist(),
                "project": self.project,
                "seed": self.seed,
                "generator": self.generator.get_state(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> ContextDataset:
        blob = torch.load(path, weights_only=False)
        first = blob["first_observations"]
        if first is not None:
            first = TensorDict(first, batch_size=[blob["states"].shape[0]])
        sampler = blob.get("sampler_class") or make_sampler(blob["sampler"], **blob.get("sampler_config", {}))
        sampler.load_state_dict(blob.get("sampler_state", {}))
        dataset = cls(
            blob["states"],
            blob["task_ids"],
            blob["task_names"],
            blob["instructions"],
            first_observations=first,
            sampler=sampler,
            noise_std=blob["noise_std"] or 0.0,
            project=blob.get("project"),
            seed=blob["seed"],
        )
        if blob.get("generator") is not None:
            dataset.generator.set_state(blob["generator"])
        return dataset

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(contexts={len(self)}, tasks={self.num_tasks}, "
            f"state_dim={self.state_dim}, sampler={self.sampler!r})"
        )


def _as_state_matrix(states) -> torch.Tensor:
    if isinstance(states, (list, tuple)) and states and not np.isscalar(states[0]):
        states = _stack_states([np.asarray(s, dtype=np.float64).reshape(-1) for s in states])
    states = torch.as_tensor(np.asarray(states, dtype=np.float64) if not isinstance(states, torch.Tensor) else states)
    states = states.to(torch.float64)
    if states.ndim == 1:
        states = states.unsqueeze(0) if states.numel() else states.reshape(0, 0)
    if states.ndim != 2:
        raise ValueError(f"states must be [N, D], got shape {tuple(states.shape)}.")
    return states


def _stack_states(rows: list[np.ndarray]) -> np.ndarray:
    sizes = sorted({row.shape[0] for row in rows})
    if len(sizes) > 1:
        raise ValueError(
            f"initial states have inconsistent sizes {sizes}: every context of one "
            "dataset must use the same state encoding (build one dataset per "
            "simulator/scene, or pad the states yourself)."
        )
    return np.stack(rows) if rows else np.zeros((0, 0))


def _concat_checked(blocks: list[torch.Tensor], names: list[str]) -> torch.Tensor:
    sizes = {name: block.shape[1] for name, block in zip(names, blocks)}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"initial states have inconsistent sizes across tasks {sizes}: every "
            "context of one dataset must use the same state encoding."
        )
    return torch.cat(blocks)


def _as_noise(noise_std, dim: int) -> torch.Tensor | None:
    noise = torch.as_tensor(noise_std, dtype=torch.float64).reshape(-1)
    if noise.numel() == 1:
        noise = noise.expand(dim).clone()
    if noise.numel() != dim:
        raise ValueError(f"noise_std has {noise.numel()} values for states of size {dim}.")
    if (noise < 0).any():
        raise ValueError("noise_std must be >= 0.")
    return None if bool((noise == 0).all()) else noise


def _demo_task(attrs, path: Path) -> tuple[str, str]:
    # ContextDataset's own naming rule (kept as it was): the task_name attribute
    # or the file name; read_demos also looks into problem_info for the name.
    name = attrs.get("task_name")
    instruction = attrs.get("language_instruction")
    if "problem_info" in attrs:
        info = json.loads(attrs["problem_info"])
        instruction = instruction or info.get("language_instruction")
    stem = path.stem.removesuffix("_demo")
    name = str(name) if name is not None else stem
    instruction = str(instruction) if instruction is not None else name
    return name, instruction
