"""MetaWorld (v3 tasks) as a TorchRL env speaking RIPT's context-reset contract.

What the context is
-------------------
A MetaWorld start is fully decided by the task's ``rand_vec``: the object
and/or goal positions drawn at reset (3 numbers for tasks that randomise one
position, 6 for tasks that randomise two; the hand always starts at the same
place). ``env._last_rand_vec`` with ``env._freeze_rand_vec = True`` replays it
exactly: two envs reset to one ``rand_vec`` give bitwise-identical first
observations, and identical actions then give identical trajectories (this is
what ``metaworld.Task`` does, without pickling or building a benchmark).

Encoding of ``"context_state"`` (``float64 [6]``, :data:`CONTEXT_DIM`): the
task's ``rand_vec`` in its first ``d`` entries (``d`` = 3 or 6, fixed per task,
see :func:`rand_vec_dim`), zeros after. The task itself travels as
``"task_id"``. One :class:`~torchrl_ript.data.ContextDataset` can therefore
hold contexts of any mix of tasks.

A ``rand_vec`` must be one the task can produce: several tasks redraw at reset
until, e.g., object and goal are far enough apart, and a frozen vector that
fails that test would be redrawn forever. Use contexts from
:func:`metaworld_contexts` (or echoed by a reset), not hand-made ones.
"""
from __future__ import annotations

import atexit
import functools
import weakref

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, NonTensor, Unbounded
from torchrl.envs import EnvBase

from torchrl_ript.data.context import ContextDataset
from torchrl_ript.envs.common import (
    CONTEXT_STATE_KEY,
    ENV_STEPS_KEY,
    SET_STATE_KEY,
    SUCCESS_KEY,
    TASK_ID_KEY,
    context_state_spec,
    read_context,
)
from torchrl_ript.envs.rendering import apply_render_quality, select_gl_backend

__all__ = [
    "CONTEXT_DIM",
    "METAWORLD_INSTRUCTIONS",
    "QUEST_CORNER2_POS",
    "MetaWorldContextProjection",
    "MetaWorldEnv",
    "metaworld_contexts",
    "metaworld_task_names",
    "rand_vec_dim",
    "rand_vec_is_valid",
    "sample_rand_vecs",
]

#: Size of the ``context_state`` vector (the largest ``rand_vec`` of the v3 tasks).
CONTEXT_DIM = 6
#: Proprioceptive part of MetaWorld's 39-d observation: hand xyz + gripper opening.
STATE_DIM = 4
ACTION_DIM = 4

#: One short instruction per v3 task.
METAWORLD_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the puck from one bin and place it into the other bin",
    "box-close-v3": "pick up the lid and place it on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button behind the wall from the top",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial",
    "disassemble-v3": "pick up the nut and remove it from the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by rotating the lock clockwise",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by rotating the lock counter-clockwise",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "rotate the faucet counter-clockwise",
    "faucet-close-v3": "rotate the faucet clockwise",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down sideways",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up sideways",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg sideways",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "push the window open",
    "window-close-v3": "push the window closed",
}

# Renderers still open: closed at exit before MuJoCo's EGL module terminates
# the display (otherwise their __del__ runs later and prints EGL errors).
_OPEN_RENDERERS: weakref.WeakSet = weakref.WeakSet()


def _track_renderer(renderer) -> None:
    if not _OPEN_RENDERERS:
        # atexit runs last-registered first: registering after the first GL
        # context exists puts us before EGL's own eglTerminate hook.
        atexit.unregister(_close_renderers)
        atexit.register(_close_renderers)
    _OPEN_RENDERERS.add(renderer)


def _close_renderers() -> None:
    for renderer in list(_OPEN_RENDERERS):
        try:
            renderer.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# Cameras whose images MetaWorld renders upside down (rotated 180 degrees).
_ROTATED_CAMERAS = ("corner", "corner2", "corner3", "corner4")
# The closer corner2 view of QueST's / TD-MPC2's MetaWorld wrappers
# (``model.cam_pos[2] = [0.75, 0.075, 0.7]``): MetaWorld's own corner2 is so
# far away that the puck covers a few pixels at 128 px.
QUEST_CORNER2_POS = (0.75, 0.075, 0.7)


def metaworld_task_names() -> list[str]:
    """The 50 MetaWorld v3 task names, in MetaWorld's order."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


def _check_task(name: str) -> None:
    names = metaworld_task_names()
    if name not in names:
        raise ValueError(
            f"unknown MetaWorld task {name!r}: valid v3 tasks are {names}."
        )


def _make_raw_env(name: str, *, max_steps: int = 500):
    """A goal-visible, task-set MetaWorld env with a frozen ``rand_vec``."""
    _check_task(name)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[name]()
    # What ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE does, minus its reset from the
    # global numpy RNG: the scripted experts need the goal in the observation.
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)  # cached_property
    env._set_task_called = True
    env._freeze_rand_vec = True
    env.seeded_rand_vec = True
    env.max_path_length = max_steps
    return env


def _draw_rand_vec(env, rng: np.random.Generator) -> np.ndarray:
    """A fresh ``rand_vec`` drawn from ``rng`` by the task's own reset logic."""
    env._freeze_rand_vec = False
    env.np_random = rng
    try:
        env.reset()
    finally:
        env._freeze_rand_vec = True
    return np.array(env._last_rand_vec, dtype=np.float64)


def _random_reset(env, rng: np.random.Generator) -> np.ndarray:
    """Reset ``env`` to a fresh start drawn from ``rng``; return the first obs."""
    # MetaWorld's reset runs ``reset_model`` twice; unfrozen, the two calls
    # draw different vectors and the first frame renders some model-side
    # positions (e.g. pick-place's goal site) from the discarded draw. Replaying
    # the kept draw makes a fresh start identical to its context reset.
    return _context_reset(env, _draw_rand_vec(env, rng))


class InvalidContextError(ValueError):
    """A frozen ``rand_vec`` that the task's reset rejects (it would redraw forever)."""


# reset_model asks for the rand_vec once or twice per reset (MetaWorld's reset
# runs it twice); a task that keeps asking is stuck in its rejection loop
_MAX_RAND_VEC_CALLS = 16


def _context_reset(env, rand_vec: np.ndarray) -> np.ndarray:
    env._freeze_rand_vec = True
    env._last_rand_vec = np.array(rand_vec, dtype=np.float64)
    calls = 0
    get = type(env)._get_state_rand_vec

    def guarded():
        nonlocal calls
        calls += 1
        if calls > _MAX_RAND_VEC_CALLS:
            raise InvalidContextError(
                f"context rand_vec {np.round(rand_vec, 4).tolist()} is rejected by "
                f"{type(env).__name__}'s reset (e.g. object and goal too close): use contexts "
                "from metaworld_contexts, and pass noisy ones through MetaWorldContextProjection."
            )
        return get(env)

    env._get_state_rand_vec = guarded
    try:
        obs, _ = env.reset()
    finally:
        del env._get_state_rand_vec
    return obs


def rand_vec_is_valid(task_name: str, context_state) -> bool:
    """Whether ``task_name``'s reset accepts the encoded start ``context_state``.

    Several tasks redraw at reset until, e.g., object and goal are far enough
    apart; a frozen vector that fails that test can never start an episode.

    Examples:
        >>> vec = sample_rand_vecs("push-v3", 1, seed=0)[0]
        >>> rand_vec_is_valid("push-v3", vec)
        True
        >>> vec[3:5] = vec[0:2]  # goal on the puck: push-v3 rejects it
        >>> rand_vec_is_valid("push-v3", vec)
        False
    """
    env = _scratch_env(task_name)
    dim = rand_vec_dim(task_name)
    try:
        _context_reset(env, np.asarray(context_state, dtype=np.float64).reshape(-1)[:dim])
    except InvalidContextError:
        return False
    return True


class MetaWorldContextProjection:
    """Make noisy MetaWorld contexts valid starts (for ``ContextDataset(project=...)``).

    Noise added to a context (:class:`~torchrl_ript.data.ContextDataset`'s
    ``noise_std`` or :meth:`~torchrl_ript.data.ContextDataset.jitter`) can move
    an object outside the region the task draws it from, or make a start the
    task's reset rejects. This clips each noisy ``rand_vec`` to the task's
    reset box and zeroes the padding; a start the task still rejects is
    replaced by its exact (noise-free) context. It pickles (it holds only the
    task names), so it travels with the dataset to worker processes.

    Args:
        task_names: the dataset's task names (its task ids index them).

    Examples:
        >>> import torch
        >>> project = MetaWorldContextProjection(["drawer-close-v3"])
        >>> exact = torch.tensor(sample_rand_vecs("drawer-close-v3", 1, seed=0))
        >>> noisy = exact + 1.0  # far outside the task's box
        >>> out = project(noisy, exact, torch.tensor([0]))
        >>> bool(out[0, 1] == 0.9), bool((out[0, 3:] == 0).all())  # y is fixed at 0.9 in this task
        (True, True)
    """

    def __init__(self, task_names) -> None:
        self.task_names = [str(name) for name in task_names]
        for name in self.task_names:
            _check_task(name)

    def __call__(self, noisy: torch.Tensor, exact: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        out = noisy.clone()
        for row, task_id in enumerate(task_ids.tolist()):
            name = self.task_names[task_id]
            space = _scratch_env(name)._random_reset_space
            dim = space.low.size
            vec = np.clip(noisy[row, :dim].numpy(), space.low, space.high)
            if rand_vec_is_valid(name, vec):
                out[row] = torch.from_numpy(encode_rand_vec(vec))
            else:
                out[row] = exact[row]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task_names})"


@functools.lru_cache(maxsize=None)
def rand_vec_dim(task_name: str) -> int:
    """Number of ``rand_vec`` entries of a task (3 or 6)."""
    return int(_scratch_env(task_name)._random_reset_space.low.size)


@functools.lru_cache(maxsize=None)
def _scratch_env(task_name: str):
    # One state-only env per task and process, to draw contexts (build ~0.1 s).
    return _make_raw_env(task_name)


def encode_rand_vec(rand_vec: np.ndarray) -> np.ndarray:
    """Pad a ``rand_vec`` with zeros to the ``[CONTEXT_DIM]`` context encoding."""
    rand_vec = np.asarray(rand_vec, dtype=np.float64).reshape(-1)
    out = np.zeros(CONTEXT_DIM, dtype=np.float64)
    out[: rand_vec.size] = rand_vec
    return out


def _task_rng(task_name: str, seed: int) -> np.random.Generator:
    # Seeded by (seed, task index): a task's contexts do not depend on which
    # other tasks are asked for in the same call.
    return np.random.default_rng([int(seed), metaworld_task_names().index(task_name)])


def sample_rand_vecs(task_name: str, n: int, *, seed: int) -> np.ndarray:
    """``[n, CONTEXT_DIM]`` encoded starts of a task, from its own reset logic.

    Each row is what the task's own ``reset`` draws (rejection steps
    included) from a generator seeded with ``(seed, task index)``: the same
    ``(task, n, seed)`` always gives the same rows, and the first ``m`` rows
    of ``n > m`` are the rows of ``m``.

    Examples:
        >>> vecs = sample_rand_vecs("reach-v3", 2, seed=0)
        >>> vecs.shape, bool((vecs == sample_rand_vecs("reach-v3", 2, seed=0)).all())
        ((2, 6), True)
    """
    _check_task(task_name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    env = _scratch_env(task_name)
    rng = _task_rng(task_name, seed)
    rows = []
    for _ in range(n):
        rows.append(encode_rand_vec(_draw_rand_vec(env, rng)))
    return np.stack(rows)


def metaworld_contexts(task_names, n_per_task: int, *, seed: int, **kwargs):
    """A :class:`~torchrl_ript.data.ContextDataset` of MetaWorld starts.

    Args:
        task_names (list of str): v3 task names; the dataset's task ids index
            this list (build the env with the same list).
        n_per_task (int): contexts per task.

    Keyword Args:
        seed (int): seed of the starts (see :func:`sample_rand_vecs`). Use
            different seeds for demonstrations and held-out evaluation.
        **kwargs: passed to :class:`~torchrl_ript.data.ContextDataset`
            (``sampler``, ``noise_std``; its sampling ``seed`` defaults to
            ``seed``).

    Examples:
        >>> ds = metaworld_contexts(["reach-v3", "push-v3"], 3, seed=0)
        >>> len(ds), ds.state_dim, ds.instruction(1)
        (6, 6, 'push the puck to the goal')
    """
    task_names = list(task_names)
    for name in task_names:
        _check_task(name)
    kwargs.setdefault("seed", seed)
    return ContextDataset.from_init_states(
        {name: sample_rand_vecs(name, n_per_task, seed=seed) for name in task_names},
        {name: METAWORLD_INSTRUCTIONS[name] for name in task_names},
        **kwargs,
    )


class MetaWorldEnv(EnvBase):
    """MetaWorld v3 tasks with exact context resets and camera observations.

    Follows :mod:`torchrl_ript.envs.common`: resetting with
    ``set_state=True`` starts task ``task_id`` from ``context_state`` (the
    task's padded ``rand_vec``, see the module doc); otherwise the env draws
    a task uniformly from ``task_names`` and a fresh start from its own
    seeded generator. Either way, the reset output echoes the context it
    started from, so any start can be replayed.

    Observations (canonical VLA schema):

    - ``("observation", "image")``: ``uint8 [3, H, W]`` from
      ``camera_names[0]``; ``("observation", "wrist_image")`` from
      ``camera_names[1]`` if given (corner cameras are turned upright);
    - ``("observation", "state")``: ``float32 [4]``, the proprioceptive part
      of MetaWorld's observation: end-effector xyz and gripper opening
      (0 closed .. 1 open). Object and goal poses are left out on purpose:
      a VLA policy must see them in the images;
    - ``"language_instruction"`` (:data:`METAWORLD_INSTRUCTIONS`),
      ``"task_id"`` ``int64 [1]``, ``"success"`` ``bool [1]``.

    ``reward`` is 1.0 on the step success is first reached, else 0;
    ``terminated`` on success, ``truncated`` after ``max_steps`` raw env
    steps. The goal is visible to the underlying env (``partially_observable
    = False``) so that MetaWorld's scripted experts work; it does not appear
    in the observations above.

    Keyword Args:
        task_names (list of str): v3 tasks this env can run (e.g.
            ``["reach-v3", "pick-place-v3"]``); each is built on first use.
        camera_names (sequence of str): cameras to render, at most 2 (main,
            then wrist/second view); ``()`` for a state-only env. MetaWorld's
            cameras: corner, corner2, corner3, corner4, topview,
            behindGripper, gripperPOV. Defaults to ``("corner2",)``.
        image_size (int): square image side in pixels. Defaults to ``128``.
        max_steps (int): time limit in raw env steps. Defaults to ``500``.
        action_chunk (int, optional): when set, the action is
            ``[action_chunk, 4]`` and one ``step`` executes it in order (stops
            early on success or the time limit) and renders once, at the end.
        quest_camera (bool): move ``corner2`` closer, to where QueST's (and
            TD-MPC2's) MetaWorld wrappers put it (:data:`QUEST_CORNER2_POS`).
            Only the camera moves; the physics is unchanged. Defaults to
            ``True``.
        render_quality (str): ``"fast"`` (shadows, reflections, multisampling
            off: ~10x faster on CPU) or ``"high"`` (MuJoCo's defaults, for
            videos). Defaults to ``"fast"``.
        seed (int, optional): seed of the non-context resets.

    Attributes:
        render_count (int): camera renders done so far (one per camera per
            reset or step).
        raw_observation (np.ndarray): MetaWorld's full 39-d observation after
            the last reset/step (goal visible), what its scripted experts read.

    Examples:
        >>> from torchrl_ript.envs import context_reset_td
        >>> env = MetaWorldEnv(task_names=["reach-v3"], image_size=32, max_steps=50, seed=0)
        >>> td = env.reset()
        >>> td["observation", "image"].shape, td["observation", "state"].shape
        (torch.Size([3, 32, 32]), torch.Size([4]))
        >>> again = env.reset(context_reset_td(td["context_state"][None], td["task_id"])[0])
        >>> bool((again["observation", "image"] == td["observation", "image"]).all())
        True
        >>> td = env.rand_step(again)
        >>> td["next", "reward"].shape
        torch.Size([1])
    """

    def __init__(
        self,
        *,
        task_names,
        camera_names=("corner2",),
        image_size: int = 128,
        max_steps: int = 500,
        action_chunk: int | None = None,
        quest_camera: bool = True,
        render_quality: str = "fast",
        seed: int | None = None,
    ) -> None:
        if isinstance(task_names, str):
            task_names = [task_names]
        task_names = list(task_names)
        if not task_names:
            raise ValueError("task_names is empty: name at least one v3 task, e.g. ['reach-v3'].")
        for name in task_names:
            _check_task(name)
        camera_names = tuple(camera_names)
        if len(camera_names) > 2:
            raise ValueError(
                f"at most 2 cameras (image, wrist_image), got {camera_names}: "
                "drop some or build several envs."
            )
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        if action_chunk is not None and action_chunk < 1:
            raise ValueError(f"action_chunk must be >= 1 or None, got {action_chunk}.")
        apply_render_quality(render_quality)  # validates the name
        if camera_names:
            select_gl_backend()
        super().__init__(device=None, batch_size=[])  # like ToyVLAEnv: SerialEnv partial resets mix devices otherwise
        self.task_names = task_names
        self.camera_names = camera_names
        self.image_size = int(image_size)
        self.max_steps = int(max_steps)
        self.action_chunk = action_chunk
        self.quest_camera = bool(quest_camera)
        self.render_quality = render_quality
        self.render_count = 0
        self.raw_observation: np.ndarray | None = None
        self._sims: dict[int, tuple[object, object]] = {}
        self._task_id = 0
        self._steps = 0
        self._rng = np.random.default_rng(seed)
        self._make_specs()

    # -- specs ------------------------------------------------------------------
    def _make_specs(self) -> None:
        side = self.image_size
        observation = {"state": Unbounded(shape=(STATE_DIM,), dtype=torch.float32)}
        for key, _ in zip(("image", "wrist_image"), self.camera_names):
            observation[key] = Unbounded(shape=(3, side, side), dtype=torch.uint8)
        self.observation_spec = Composite(
            observation=Composite(observation),
            language_instruction=NonTensor(
                shape=(), example_data=METAWORLD_INSTRUCTIONS[self.task_names[0]], device=self.device
            ),
            **{
                TASK_ID_KEY: Unbounded(shape=(1,), dtype=torch.int64),
                SUCCESS_KEY: Categorical(2, shape=(1,), dtype=torch.bool),
                ENV_STEPS_KEY: Unbounded(shape=(1,), dtype=torch.int64),
            },
        )
        shape = (ACTION_DIM,) if self.action_chunk is None else (self.action_chunk, ACTION_DIM)
        self.action_spec = Bounded(-1.0, 1.0, shape=shape, dtype=torch.float32)
        self.reward_spec = Unbounded(shape=(1,), dtype=torch.float32)
        flag = Categorical(2, shape=(1,), dtype=torch.bool)
        self.done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone())
        self.state_spec = context_state_spec(CONTEXT_DIM)

    # -- simulator ----------------------------------------------------------------
    def _sim(self, task_id: int):
        """The (metaworld env, renderer) of a task, built on first use."""
        if not 0 <= task_id < len(self.task_names):
            raise IndexError(
                f"task_id {task_id} out of range: this env has {len(self.task_names)} "
                f"tasks {self.task_names}."
            )
        if task_id not in self._sims:
            env = _make_raw_env(self.task_names[task_id], max_steps=self.max_steps)
            renderer = None
            if self.camera_names:
                import mujoco

                if self.quest_camera:
                    env.model.cam("corner2").pos[:] = QUEST_CORNER2_POS
                apply_render_quality(self.render_quality, model=env.model)
                renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
                apply_render_quality(self.render_quality, scene=renderer.scene)
                _track_renderer(renderer)
            self._sims[task_id] = (env, renderer)
        return self._sims[task_id]

    @property
    def sim(self):
        """The underlying MetaWorld env of the current task (read-only use)."""
        return self._sim(self._task_id)[0]

    def _observe(self, raw_obs: np.ndarray, success: bool) -> TensorDict:
        env, renderer = self._sim(self._task_id)
        self.raw_observation = raw_obs
        observation = {"state": torch.as_tensor(raw_obs[:STATE_DIM], dtype=torch.float32)}
        for key, camera in zip(("image", "wrist_image"), self.camera_names):
            renderer.update_scene(env.data, camera=camera)
            image = renderer.render()
            self.render_count += 1
            if camera in _ROTATED_CAMERAS:
                image = image[::-1, ::-1]
            observation[key] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return TensorDict(
            {
                "observation": observation,
                "language_instruction": METAWORLD_INSTRUCTIONS[self.task_names[self._task_id]],
                TASK_ID_KEY: torch.tensor([self._task_id]),
                SUCCESS_KEY: torch.tensor([success]),
                ENV_STEPS_KEY: torch.zeros(1, dtype=torch.int64),
            },
            batch_size=[],
            device=self.device,  # SerialEnv stacks outputs and needs one device
        )

    # -- EnvBase ----------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        context = read_context(tensordict)
        if context is None:
            self._task_id = int(self._rng.integers(len(self.task_names)))
            env, _ = self._sim(self._task_id)
            raw_obs = _random_reset(env, self._rng)
        else:
            state, self._task_id = context
            env, _ = self._sim(self._task_id)
            dim = rand_vec_dim(self.task_names[self._task_id])
            raw_obs = _context_reset(env, state[:dim].cpu().numpy())
        self._steps = 0
        out = self._observe(raw_obs, False)
        out.update(self.full_done_spec.zero())
        out[SET_STATE_KEY] = torch.tensor([context is not None])
        out[CONTEXT_STATE_KEY] = torch.from_numpy(encode_rand_vec(env._last_rand_vec))
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        env, _ = self._sim(self._task_id)
        actions = tensordict.get("action").detach().cpu().numpy().astype(np.float64)
        actions = np.clip(actions.reshape(-1, ACTION_DIM), -1.0, 1.0)
        success = False
        executed = 0
        for action in actions:
            raw_obs, _, _, _, info = env.step(action)
            self._steps += 1
            executed += 1
            success = bool(info["success"] > 0)
            if success or self._steps >= self.max_steps:
                break
        truncated = not success and self._steps >= self.max_steps
        out = self._observe(raw_obs, success)
        out["reward"] = torch.tensor([float(success)], dtype=torch.float32)
        out[ENV_STEPS_KEY] = torch.tensor([executed])
        out["terminated"] = torch.tensor([success])
        out["truncated"] = torch.tensor([truncated])
        out["done"] = torch.tensor([success or truncated])
        return out

    def _set_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def close(self, *, raise_if_closed: bool = True) -> None:
        for env, renderer in self._sims.values():
            if renderer is not None:
                renderer.close()
            env.close()
        self._sims.clear()
        super().close(raise_if_closed=raise_if_closed)
