"""TorchRL's ``LiberoEnv`` with what RIPT needs: exact context resets, both cameras, fast steps.

TorchRL 0.14.1 ships :class:`torchrl.envs.LiberoEnv` (one benchmark task, the
canonical VLA schema, binary success reward, benchmark init states). RIPT
needs more; :class:`LiberoContextEnv` subclasses it and adds, each for a reason
given in the code:

- the context-reset contract of :mod:`torchrl_ript.envs.common`: reset with
  ``set_state=True`` starts from *any* flattened MuJoCo state passed as
  ``context_state`` (not only the benchmark's init states), zero-padded to a
  fixed ``context_state_dim`` so every LIBERO task shares one spec;
- both cameras by default (agentview and eye-in-hand) at 128 px, a ``task_id``
  entry, per-suite time limits of the official evaluation code;
- ``hard_reset=False`` (the default rebuilds the MuJoCo model and GL context
  on every reset: ~3-4 s instead of ~0.1 s);
- speed on CPU: ``render_quality="fast"`` (no shadows, reflections or
  multisampling), ``fast_step=True`` (robosuite samples its observables, and
  renders the cameras, inside the physics sub-step loop; here observations are
  computed once, from the final state of each ``step``), unused observables
  switched off, and ``action_chunk``: one ``step`` executes ``[n, 7]`` actions
  and renders once.

Time limits (``max_episode_steps``, in low-level actions after the settle
steps) follow the official RIPT-VLA OpenVLA-OFT runner
(``ript/env_runner/openvla_oft_libero_runner.py``, ``TASK_MAX_STEPS``, copied
from OpenVLA-OFT's ``experiments/robot/libero/run_libero_eval.py``):
spatial 220, object 280, goal 300, libero_10 520, libero_90 400, each after 10
no-op "wait" steps. RIPT's QueST configs (``config/task/libero_base.yaml``)
use ``horizon: 600`` for every suite instead: pass ``max_episode_steps=600``.

:func:`libero_suite_tasks` (the benchmark's task records of a suite) lives here
too: the env names its tasks with it, and the context builders of
:mod:`torchrl_ript.envs.libero.contexts` index tasks the same way.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Unbounded
from torchrl.envs.libs.libero import LiberoEnv

from torchrl_ript.envs.common import (
    CONTEXT_STATE_KEY,
    ENV_STEPS_KEY,
    SET_STATE_KEY,
    TASK_ID_KEY,
    context_state_spec,
    read_context,
)
from torchrl_ript.envs.libero.setup import ensure_libero
from torchrl_ript.envs.rendering import apply_render_quality

__all__ = [
    "LiberoContextEnv",
    "LIBERO_SUITES",
    "LIBERO_MAX_STEPS",
    "LIBERO_CONTEXT_STATE_DIM",
    "LIBERO_PROPRIO_KEYS",
    "libero_suite_tasks",
    "pad_state",
]

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Official RIPT-VLA / OpenVLA-OFT per-suite limits (see the module docstring).
LIBERO_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
# Largest flattened MuJoCo state over the five suites is 123 (libero_10/90);
# spatial 92, object 110, goal 79. 128 leaves room and stays a round number.
LIBERO_CONTEXT_STATE_DIM = 128
_CAMERA = "agentview"
_WRIST_CAMERA = "robot0_eye_in_hand"
# Observables the env reads (proprio defaults + what the demo writer records).
# LIBERO demo files' joint_states (7) + gripper_states (2).
LIBERO_PROPRIO_KEYS = ("robot0_joint_pos", "robot0_gripper_qpos")
_ALWAYS_KEEP = ("robot0_joint_pos", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


def libero_suite_tasks(suite: str) -> list:
    """The ``libero.libero.benchmark`` task records of a suite (name, language, files)."""
    if suite not in LIBERO_SUITES:
        raise ValueError(f"suite must be one of {LIBERO_SUITES}, got {suite!r}.")
    ensure_libero()
    # libero is an optional dependency (scripts/install_libero.sh), and importing
    # it before ensure_libero() has written its config prompts for a path.
    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints "[info] using task orders ..."
        bench = benchmark.get_benchmark_dict()[suite]()
    return [bench.get_task(i) for i in range(bench.n_tasks)]


def pad_state(state, dim: int = LIBERO_CONTEXT_STATE_DIM) -> torch.Tensor:
    """Zero-pad (at the end) a flattened MuJoCo state to ``dim`` entries, float64.

    The convention of :class:`LiberoContextEnv`: a context is the task's
    flattened state ``[time, qpos, qvel]`` followed by zeros; the env reads
    back its own task's true size and ignores the padding.

    Examples:
        >>> pad_state([1.0, 2.0], 4)
        tensor([1., 2., 0., 0.], dtype=torch.float64)
    """
    state = torch.as_tensor(np.asarray(state), dtype=torch.float64).reshape(-1)
    if state.numel() > dim:
        raise ValueError(
            f"state has {state.numel()} entries but context_state_dim={dim}: build the "
            f"env (and contexts) with context_state_dim >= {state.numel()}."
        )
    out = torch.zeros(dim, dtype=torch.float64)
    out[: state.numel()] = state
    return out


class LiberoContextEnv(LiberoEnv):
    """One LIBERO task with exact context resets, two cameras and fast CPU steps.

    See the module docstring for what this adds to TorchRL's
    :class:`~torchrl.envs.LiberoEnv` and why. Outputs follow the canonical
    VLA schema: ``("observation", "image")`` (agentview) and
    ``("observation", "wrist_image")`` (eye-in-hand), ``uint8 [3, H, W]``;
    ``("observation", "state")`` (``float32``, ``proprio_keys`` concatenated;
    default joint positions (7) + gripper qpos (2), LIBERO's demo-file
    ``joint_states`` + ``gripper_states``);
    ``language_instruction``, ``task_id``, ``success``; reward 1.0 on the step
    success is reached (then ``terminated``), ``truncated`` at the time limit.

    Context resets: ``env.reset(context_reset_td(states, task_ids)[0])`` with a
    ``[context_state_dim]`` state (a flattened MuJoCo state of *this* task,
    zero-padded at the end, see :func:`pad_state`), then ``settle_steps`` no-op
    steps. Two envs reset to the same context give bitwise-identical
    observations and, with identical actions, trajectories. A plain
    ``reset()`` draws a benchmark init state (``init_state_mode``) and echoes
    it as ``context_state``, so it can be replayed.

    Args:
        task_suite (str): one of :data:`LIBERO_SUITES`.
        task_id (int): the task index in the suite.

    Keyword Args:
        camera_size (int): height and width of both cameras. Defaults to ``128``.
        wrist_camera (bool): render the eye-in-hand camera too. Defaults to ``True``.
        context_state_dim (int): size of ``context_state``. Defaults to
            :data:`LIBERO_CONTEXT_STATE_DIM` (128, fits every suite).
        max_episode_steps (int, optional): time limit in low-level actions,
            not counting the settle steps. Defaults to :data:`LIBERO_MAX_STEPS`
            of the suite.
        action_chunk (int, optional): if set, ``action`` is ``[n, 7]`` and one
            ``step`` executes the ``n`` actions in order, stopping early on
            success or at the time limit, and renders once at the end.
        render_quality (str): ``"fast"`` (no shadows, reflections or
            multisampling: ~2x faster on CPU, images nearly identical) or
            ``"high"`` (MuJoCo's defaults). Defaults to ``"fast"``.
        fast_step (bool): compute observations once per ``step`` from its final
            simulator state (``True``), or let robosuite sample them inside
            its physics sub-step loop at every action (``False``, LIBERO's
            native behaviour: its images show the state one 2 ms sub-step into
            the last action). Defaults to ``True``.
        settle_steps (int): no-op steps after each reset (objects settle; the
            official evaluation waits 10). Defaults to ``10``.
        placement_seed (int): seed of LIBERO's fixture placement, drawn at
            every reset. Fixture poses live in the MuJoCo *model*, not in the
            flattened state, so they are fixed for a given seed: that is what
            makes a context (a flattened state) determine the start exactly.
            Defaults to ``0``.
        seed (int, optional): seeds the simulator's own RNG and the draw of
            init states on non-context resets.
        env_kwargs (dict, optional): extra ``OffScreenRenderEnv`` arguments.
        **kwargs: other :class:`~torchrl.envs.LiberoWrapper` options
            (``proprio_keys``, ``flip_image``, ``init_state_mode``, ...).

    Examples:
        >>> from torchrl_ript.envs.libero import LiberoContextEnv
        >>> from torchrl_ript.envs import context_reset_td
        >>> env = LiberoContextEnv("libero_spatial", 0, action_chunk=4)  # doctest: +SKIP
        >>> td = env.reset()  # doctest: +SKIP
        >>> td["observation", "image"].shape, td["observation", "wrist_image"].shape  # doctest: +SKIP
        (torch.Size([3, 128, 128]), torch.Size([3, 128, 128]))
        >>> ctx = context_reset_td(td["context_state"][None], torch.tensor([0]))[0]  # doctest: +SKIP
        >>> again = env.reset(ctx)  # doctest: +SKIP
        >>> bool((again["observation", "image"] == td["observation", "image"]).all())  # doctest: +SKIP
        True
        >>> td["action"] = torch.zeros(4, 7)  # doctest: +SKIP
        >>> env.step(td)["next", "reward"]  # doctest: +SKIP
        tensor([0.])
    """

    def __init__(
        self,
        task_suite: str | None = None,
        task_id: int | None = None,
        *,
        camera_size: int = 128,
        wrist_camera: bool = True,
        context_state_dim: int = LIBERO_CONTEXT_STATE_DIM,
        max_episode_steps: int | None = None,
        action_chunk: int | None = None,
        render_quality: str = "fast",
        fast_step: bool = True,
        settle_steps: int = 10,
        placement_seed: int = 0,
        seed: int | None = None,
        env_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        if task_suite not in LIBERO_SUITES:
            raise ValueError(f"task_suite must be one of {LIBERO_SUITES}, got {task_suite!r}.")
        if render_quality not in ("fast", "high"):
            raise ValueError(f"render_quality must be 'fast' or 'high', got {render_quality!r}.")
        if action_chunk is not None and action_chunk < 1:
            raise ValueError(f"action_chunk must be >= 1 or None, got {action_chunk}.")
        if max_episode_steps is None:
            max_episode_steps = LIBERO_MAX_STEPS[task_suite]
        # Config, asset link and GL backend must exist before libero/robosuite import
        # (also in spawned worker processes, which run this again).
        ensure_libero()
        self.context_state_dim = int(context_state_dim)
        self.action_chunk = action_chunk
        self.render_quality = render_quality
        self.fast_step = bool(fast_step)
        self.placement_seed = int(placement_seed)
        self._seed = seed
        # LIBERO's demo files hold joint_states + gripper_states: the same state
        # here lets a policy trained on them (LIBERO_KEY_MAP of
        # torchrl_ript.data.demos) act in this env. TorchRL's default is eef
        # pose + gripper; pass proprio_keys to choose.
        kwargs.setdefault("proprio_keys", LIBERO_PROPRIO_KEYS)
        env_kwargs = dict(env_kwargs or {})
        # Soft resets: the default hard reset rebuilds the model and GL context
        # every episode (3-4 s on CPU); context resets set the full state anyway.
        env_kwargs.setdefault("hard_reset", False)
        # We enforce the time limit; robosuite's own horizon (1000) would raise.
        env_kwargs.setdefault("ignore_done", True)
        # Only the cameras we read: no depth, no segmentation (which also
        # overflows under numpy 2 in robosuite 1.4).
        cameras = [_CAMERA] + ([_WRIST_CAMERA] if wrist_camera else [])
        env_kwargs.setdefault("camera_names", cameras)
        env_kwargs.setdefault("camera_depths", False)
        env_kwargs.setdefault("camera_segmentations", None)
        super().__init__(
            task_suite,
            task_id,
            camera_height=camera_size,
            camera_width=camera_size,
            env_kwargs=env_kwargs,
            camera=_CAMERA,
            wrist_camera=_WRIST_CAMERA if wrist_camera else None,
            max_episode_steps=max_episode_steps,
            settle_steps=settle_steps,
            **kwargs,
        )
        if seed is not None:
            self.set_seed(seed)

    # -- build ----------------------------------------------------------------
    def _build_env(self, task_suite, task_id, camera_height, camera_width, env_kwargs):  # type: ignore[override]
        with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints its task order per benchmark
            env = super()._build_env(task_suite, task_id, camera_height, camera_width, env_kwargs)
        tasks = libero_suite_tasks(task_suite)
        # The contract's task_id indexes task_names: the whole suite, so ids
        # match libero_contexts(suite) datasets.
        self.task_names = [task.name for task in tasks]
        self.task_instructions = [str(task.language) for task in tasks]
        robosuite_env = env.env
        self._true_state_dim = int(env.get_sim_state().shape[0])
        if self._true_state_dim > self.context_state_dim:
            raise ValueError(
                f"{task_suite} task {task_id} has a {self._true_state_dim}-dim MuJoCo "
                f"state but context_state_dim={self.context_state_dim}: pass "
                f"context_state_dim >= {self._true_state_dim}."
            )
        self._substeps = int(round(robosuite_env.control_timestep / robosuite_env.model_timestep))
        self._apply_render_quality(robosuite_env, camera_height, camera_width)
        self._disable_unused_observables(robosuite_env)
        return env

    def _apply_render_quality(self, robosuite_env, height, width) -> None:
        # robosuite created the GL context at construction with MuJoCo's
        # defaults (4096^2 shadow map, 4x MSAA, 640x480 buffer); on a software
        # rasteriser those dominate a 128 px render. Recreate it with fast
        # settings (physics untouched).
        if self.render_quality == "high":
            return
        context = robosuite_env.sim._render_context_offscreen
        model = robosuite_env.sim.model._model
        apply_render_quality("fast", model=model)
        model.vis.global_.offwidth = int(width)
        model.vis.global_.offheight = int(height)
        context.gl_ctx.make_current()
        context.con.free()
        context._set_mujoco_context_and_buffers()
        apply_render_quality("fast", scene=context.scn)

    def _disable_unused_observables(self, robosuite_env) -> None:
        # robosuite evaluates every observable (object poses, relative poses,
        # joint sin/cos/vel, ...) on each control step; RIPT reads a few.
        keep = set(_ALWAYS_KEEP) | set(self.proprio_keys)
        keep |= {f"{name}_image" for name in robosuite_env.camera_names}
        for name, observable in robosuite_env._observables.items():
            if name not in keep:
                observable.set_enabled(False)
        self._camera_observables = [
            robosuite_env._observables[f"{name}_image"] for name in robosuite_env.camera_names
        ]

    def _make_specs(self, env) -> None:
        super()._make_specs(env)
        # Context-reset inputs (travel through ParallelEnv shared buffers).
        self.state_spec = context_state_spec(self.context_state_dim, device=self.device)
        self.observation_spec[TASK_ID_KEY] = Unbounded(shape=(1,), dtype=torch.int64, device=self.device)
        # Low-level actions run by a (chunked) step, for honest env-step counts.
        self.observation_spec[ENV_STEPS_KEY] = Unbounded(shape=(1,), dtype=torch.int64, device=self.device)
        if self.action_chunk is not None:
            # One decision step = a chunk of n low-level actions.
            low = self.action_spec.space.low.expand(self.action_chunk, -1).clone()
            high = self.action_spec.space.high.expand(self.action_chunk, -1).clone()
            self.action_spec = Bounded(low=low, high=high, shape=low.shape, dtype=torch.float32, device=self.device)
        if self.fast_step:
            self._set_cameras(False)  # rendered on demand by _observe()

    # -- reset ----------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        self._make_gl_current()
        context = read_context(tensordict)
        if context is None:
            out = self._reset_from(None)
        else:
            state, task_id = context
            if task_id != self.task_id:
                raise ValueError(
                    f"context task_id {task_id} ({self.task_names[task_id] if 0 <= task_id < len(self.task_names) else '?'}) "
                    f"but this env simulates task {self.task_id} of {self.task_suite}: build one "
                    "env per task (e.g. ParallelEnv with one create_env_fn per task) and route "
                    "each context to an env of its task."
                )
            out = self._reset_from(state[: self._true_state_dim].cpu().numpy())
        out[SET_STATE_KEY] = torch.tensor([context is not None], device=self.device)
        return out

    def _reset_from(self, state: np.ndarray | None) -> TensorDictBase:
        env = self._env
        with self._cameras_off_if_fast():
            self._placement_reset()
            self._reset_gripper_state()
            if state is None:
                state = self._select_init_state()  # base class: benchmark init states
            if state is not None:
                env.set_init_state(state)
            self._clear_solver_warmstart()
            start = env.get_sim_state().copy()
            for _ in range(self.settle_steps):
                self._act(self._dummy_action)
        self._elapsed = 0
        self._episode_count += 1
        out = self._read_obs(self._observe(), success=bool(env.check_success()))
        out.update(self.full_done_spec.zero())
        out[CONTEXT_STATE_KEY] = pad_state(start, self.context_state_dim).to(self.device)
        out[ENV_STEPS_KEY] = torch.zeros(1, dtype=torch.int64, device=self.device)
        return out

    def _placement_reset(self) -> None:
        # LIBERO places *fixtures* (cabinets, stoves, ...) at every reset by
        # writing model.body_pos/body_quat from numpy's global RNG; those are
        # not part of the flattened MuJoCo state, so a context alone would not
        # fix them (two envs reset to one context rendered different scenes).
        # Draw the placement with a fixed seed, leaving the global RNG as it was.
        rng_state = np.random.get_state()
        np.random.seed(self.placement_seed)
        try:
            self._env.reset()
        finally:
            np.random.set_state(rng_state)

    def _clear_solver_warmstart(self) -> None:
        # The flattened state is [time, qpos, qvel]; MuJoCo's constraint solver also
        # warm-starts from the previous step's accelerations (qacc_warmstart), which
        # a soft reset leaves from the last episode: the first steps then differ in
        # the last bits, so float64 states would not replay bitwise. Start cold.
        self._env.env.sim.data.qacc_warmstart[:] = 0.0

    def _reset_gripper_state(self) -> None:
        # robosuite's grippers smooth commands through `current_action`, set
        # to zeros when the model is built and never reset: with
        # hard_reset=False it would leak from the previous episode and break
        # exact context resets. Reset it as a hard reset would.
        for robot in self._env.env.robots:
            gripper = getattr(robot, "gripper", None)
            if gripper is not None and hasattr(gripper, "current_action"):
                gripper.current_action = np.zeros_like(gripper.current_action)

    # -- step -----------------------------------------------------------------
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._make_gl_current()
        actions = tensordict.get("action").detach().cpu().to(torch.float64).numpy()
        actions = actions.reshape(-1, self._action_dim)
        success = False
        executed = 0
        for action in actions:
            self._act(action)
            self._elapsed += 1
            executed += 1
            success = bool(self._env.check_success())
            if success or self._elapsed >= self.max_episode_steps:
                break  # the rest of the chunk is not executed
        truncated = self._elapsed >= self.max_episode_steps and not success
        out = self._read_obs(self._observe(), success=success)
        out["reward"] = torch.tensor([float(success)], device=self.device)
        out[ENV_STEPS_KEY] = torch.tensor([executed], dtype=torch.int64, device=self.device)
        out["terminated"] = torch.tensor([success], dtype=torch.bool, device=self.device)
        out["truncated"] = torch.tensor([truncated], dtype=torch.bool, device=self.device)
        out["done"] = torch.tensor([success or truncated], dtype=torch.bool, device=self.device)
        return out

    def _act(self, action: np.ndarray) -> None:
        if not self.fast_step:
            self._last_obs, _, _, _ = self._env.step(action)
            return
        # robosuite's step() without its per-sub-step observable sampling
        # (robosuite/environments/base.py::step): the physics and controller
        # calls are the same, in the same order, so trajectories match.
        env = self._env.env
        env.timestep += 1
        policy_step = True
        for _ in range(self._substeps):
            env.sim.forward()
            env._pre_action(action, policy_step)
            env.sim.step()
            policy_step = False
        env.cur_time += env.control_timestep
        env._post_process()  # LIBERO's object-state bookkeeping (lights, ...)

    def _observe(self) -> dict:
        if not self.fast_step:
            return self._last_obs
        env = self._env.env
        env.sim.forward()  # derived quantities (poses) of the final state
        self._set_cameras(True)
        try:
            return env._get_observations(force_update=True)
        finally:
            self._set_cameras(False)

    _last_obs: dict | None = None

    # -- helpers --------------------------------------------------------------
    def _make_gl_current(self) -> None:
        # robosuite renders into whatever GL context is current and only makes
        # its own current when created: with several envs in one process
        # (SerialEnv, tests) an env would draw with another env's buffers and
        # textures. Cheap when already current.
        context = getattr(self._env.env.sim, "_render_context_offscreen", None)
        if context is not None:
            context.gl_ctx.make_current()

    def _set_cameras(self, enabled: bool) -> None:
        for observable in self._camera_observables:
            observable.set_enabled(enabled)

    @contextlib.contextmanager
    def _cameras_off_if_fast(self):
        # In fast mode the cameras are off between observations already; in
        # native mode the reset/settle renders are LIBERO's behaviour: keep them
        # but remember the last observation.
        if self.fast_step:
            yield
            return
        env = self._env
        original = env.set_init_state

        def set_init_state(state):
            self._last_obs = original(state)
            return self._last_obs

        env.set_init_state = set_init_state
        try:
            self._last_obs = None
            yield
            if self._last_obs is None:
                self._last_obs = env.env._get_observations(force_update=True)
        finally:
            del env.set_init_state

    def _read_obs(self, obs: dict, *, success: bool) -> TensorDictBase:
        out = super()._read_obs(obs, success=success)
        out[TASK_ID_KEY] = torch.tensor([self.task_id], dtype=torch.int64, device=self.device)
        return out

    def reset_to_state(self, state) -> TensorDictBase:
        """Reset to ``state`` (flattened MuJoCo state, padded or not); returns the first observation."""
        return self._reset_from(np.asarray(state, dtype=np.float64).reshape(-1)[: self._true_state_dim])

    # -- physics without rendering (scripted experts, planning) ---------------
    def reset_physics(self, state) -> None:
        """Reset to ``state`` exactly as a context reset does, without rendering.

        The simulator then holds the state a context reset would give (settle
        steps included), so actions found here replay bitwise through
        :meth:`reset` / :meth:`step`. Needs ``fast_step=True``.
        """
        if not self.fast_step:
            raise RuntimeError("reset_physics needs fast_step=True (native steps render at every action).")
        state = np.asarray(state, dtype=np.float64).reshape(-1)[: self._true_state_dim]
        self._placement_reset()
        self._reset_gripper_state()
        self._env.set_init_state(state)
        self._clear_solver_warmstart()
        for _ in range(self.settle_steps):
            self._act(self._dummy_action)
        self._elapsed = 0

    def step_physics(self, action) -> bool:
        """Execute one low-level ``[7]`` action without rendering; returns success.

        The same physics and controller calls as :meth:`step` (which also
        renders the cameras); the time limit is not enforced here.
        """
        if not self.fast_step:
            raise RuntimeError("step_physics needs fast_step=True.")
        self._act(np.asarray(action, dtype=np.float64).reshape(self._action_dim))
        self._elapsed += 1
        success = bool(self._env.check_success())
        # step() computes the derived quantities of the final state before rendering
        # (_observe); doing the same keeps this path bitwise equal to step()'s
        self._env.env.sim.forward()
        return success

    def sample_start(self, seed: int) -> np.ndarray:
        """A fresh start drawn by LIBERO's own placement sampler, the distribution
        the benchmark's init states were drawn from; the unpadded flattened state.

        Only for scenes whose fixtures stay where ``placement_seed`` puts them
        (a context holds the objects' poses, not the fixtures'): every
        ``libero_object`` task (no fixtures). Other scenes raise ``ValueError``.
        The env is left as after a reset to ``placement_seed``'s fixtures.

        Examples:
            >>> env = LiberoContextEnv("libero_object", 0, camera_size=32)  # doctest: +SKIP
            >>> env.sample_start(0).shape  # doctest: +SKIP
            (110,)
        """
        robosuite_env = self._env.env
        fixtures = [robosuite_env.sim.model.body_name2id(robosuite_env.get_object(name).root_body)
                    for name in robosuite_env.fixtures_dict]
        self._placement_reset()
        reference = [(robosuite_env.sim.model.body_pos[b].copy(), robosuite_env.sim.model.body_quat[b].copy())
                     for b in fixtures]
        rng_state = np.random.get_state()
        np.random.seed(int(seed))
        try:
            self._env.reset()  # LIBERO's placement sampler, from numpy's global RNG
            state = self._env.get_sim_state().copy()
            moved = [name for name, b, (pos, quat) in zip(robosuite_env.fixtures_dict, fixtures, reference)
                     if not (np.array_equal(robosuite_env.sim.model.body_pos[b], pos)
                             and np.array_equal(robosuite_env.sim.model.body_quat[b], quat))]
        finally:
            np.random.set_state(rng_state)
            self._placement_reset()  # fixtures back where contexts expect them
        if moved:
            raise ValueError(
                f"{self.task_suite} task {self.task_id}: fresh starts also move the fixtures {moved}, "
                "which a context (the flattened state) does not hold; use the benchmark init "
                "states (libero_contexts(source='init_files')) for this scene."
            )
        return state

    @property
    def robosuite_env(self):
        """The underlying LIBERO (robosuite) environment: privileged simulator access."""
        return self._env.env

    @property
    def true_state_dim(self) -> int:
        """Size of this task's flattened MuJoCo state (before padding)."""
        return self._true_state_dim

    def get_sim_state(self) -> np.ndarray:
        """The current flattened MuJoCo state ``[time, qpos, qvel]`` (unpadded)."""
        return self._env.get_sim_state().copy()

    def robot_observation(self, name: str) -> np.ndarray:
        """robosuite's current value of the observable ``name`` (e.g. ``"robot0_eef_pos"``).

        What LIBERO's datasets store as proprioception (``ee_pos``,
        ``joint_states``, ...); current after every ``reset``/``step``.
        """
        observables = self._env.env._observables  # robosuite keeps them private; read here only
        if name not in observables:
            raise KeyError(f"no robosuite observable {name!r}; available: {sorted(observables)}.")
        return np.asarray(observables[name].obs, dtype=np.float64)
