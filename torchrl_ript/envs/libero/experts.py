"""Scripted LIBERO experts: privileged-state pick-and-place demonstrations.

LIBERO ships no scripted policies (its datasets are human teleoperation), so
a user without the datasets has nothing to clone. :class:`LiberoScriptedExpert`
reads the task's BDDL goal and the simulator's object, fixture and site
poses, and drives the arm with robosuite's ``OSC_POSE`` delta actions (the
action space of LIBERO's datasets and policies: ``[dx, dy, dz, dax, day, daz,
gripper]`` in ``[-1, 1]``, scaled by 0.05 m and 0.5 rad; gripper ``-1`` open,
``+1`` closed) through a few closed-loop waypoints:

    above the grasp point -> down -> close -> lift -> above the target ->
    down to the release height -> open -> up

The grasp yaw is the one that makes the object narrowest across the fingers
(computed from the collision geometry); bowls are grasped at the rim with the
fingers across the rim wall. The place target is the goal's object or site,
and the held object (not the hand) is steered onto it. If the object slips,
the expert goes back and grasps again.

Covered goals (one ``On``/``In`` predicate whose first argument is a movable
object): every ``libero_object`` task ("pick up the X and place it in the
basket"), every ``libero_spatial`` task ("pick up the black bowl ... and
place it on the plate"), and the pick-and-place tasks of ``libero_goal`` (put
the bowl on the plate / stove / cabinet, the cream cheese in the bowl, the
wine bottle on the cabinet or the rack); :func:`expert_supports` says whether
a task is covered. Success rates and speed: ``benchmarks/README_libero.md``.

Demos are recorded in two passes: the expert acts on the physics alone (no
rendering, ~10x faster); an episode that succeeds is replayed from the same
context with the cameras on and written in LIBERO's HDF5 layout
(:func:`~torchrl_ript.envs.libero.contexts.write_libero_rollout_demos`'s
conventions: ``obs/{agentview_rgb, eye_in_hand_rgb, joint_states,
gripper_states, ee_pos, ee_ori, ee_states}`` as rendered (upside down),
``actions``, ``states``, ``rewards``, ``dones``, ``context_state``), up to the
step of the first success. The replay must reach success at the same step,
which checks that a demo replays bitwise from its stored context.

Starts are the benchmark's init states (50 per task): ``--starts`` picks which
(default: from the last one backwards, so the first ones stay held out for
evaluation); or, in fixture-free scenes (``libero_object``), fresh draws of
LIBERO's placement sampler (``--fresh-seed``), which leave all 50 init states
for evaluation. Optional Gaussian action noise (``--noise``, in action units);
only successful episodes are kept.

Usage::

    python -m torchrl_ript.envs.libero.experts --suite libero_object --tasks 0 1 --n 10 --out demos/
    python -m torchrl_ript.envs.libero.experts --suite libero_object --tasks 0 1 2 --n 5 --fresh-seed 0 --out demos/
    python -m torchrl_ript.envs.libero.experts --suite libero_spatial --tasks 0 --measure --starts 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from torchrl_ript.data.demos import DemoWriter
from torchrl_ript.envs.common import context_reset_td
from torchrl_ript.envs.libero.contexts import _record, libero_contexts, libero_demo_env_args
from torchrl_ript.envs.libero.env import LiberoContextEnv, libero_suite_tasks, pad_state

__all__ = [
    "LiberoScriptedExpert",
    "ExpertEpisode",
    "expert_supports",
    "run_expert_episode",
    "record_libero_demos",
    "default_demo_starts",
    "main",
]

_POS_SCALE = 0.05  # OSC_POSE output_max for translation (m per unit action)
_ROT_SCALE = 0.5  # and for rotation (rad per unit action)
_OPEN, _CLOSED = -1.0, 1.0
# Grip-site frame pointing down with the fingers closing along world y (the
# site's x axis), as the robot starts: columns are the site's x, y, z axes.
_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


@dataclass
class _Box:
    lo: np.ndarray
    hi: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def size(self) -> np.ndarray:
        return self.hi - self.lo


class _Scene:
    """Privileged read-out of a LIBERO (robosuite) env: poses and geometry."""

    def __init__(self, env) -> None:
        self.env = env
        self.model = env.sim.model._model
        self.data = env.sim.data._data
        self._geoms: dict[str, np.ndarray] = {}

    def body_pos(self, name: str) -> np.ndarray:
        return self.env.sim.data.body_xpos[self.env.obj_body_id[name]].copy()

    def body_mat(self, name: str) -> np.ndarray:
        return self.env.sim.data.body_xmat[self.env.obj_body_id[name]].reshape(3, 3).copy()

    def site_pos(self, name: str) -> np.ndarray:
        return self.env.sim.data.get_site_xpos(name).copy()

    def _collision_geoms(self, name: str) -> np.ndarray:
        if name not in self._geoms:
            root = self.env.obj_body_id[name]
            bodies = {root}
            for body in range(self.model.nbody):  # bodies are ordered parents first
                if self.model.body_parentid[body] in bodies and body != 0:
                    bodies.add(body)
            geoms = [
                g for g in range(self.model.ngeom)
                if self.model.geom_bodyid[g] in bodies
                and (self.model.geom_contype[g] or self.model.geom_conaffinity[g])
            ]
            self._geoms[name] = np.asarray(geoms, dtype=np.int64)
        return self._geoms[name]

    def corners(self, name: str) -> np.ndarray:
        """World coordinates of the corners of the collision geoms' boxes, ``[8 G, 3]``."""
        geoms = self._collision_geoms(name)
        signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T  # [8, 3]
        aabb = self.model.geom_aabb[geoms]  # local center (3) + half sizes (3)
        local = aabb[:, None, :3] + signs[None] * aabb[:, None, 3:]  # [G, 8, 3]
        mats = self.data.geom_xmat[geoms].reshape(-1, 3, 3)
        world = np.einsum("gij,gkj->gki", mats, local) + self.data.geom_xpos[geoms][:, None]
        return world.reshape(-1, 3)

    def box(self, name: str) -> _Box:
        pts = self.corners(name)
        return _Box(pts.min(0), pts.max(0))

    def eef_pos(self) -> np.ndarray:
        robot = self.env.robots[0]
        return self.env.sim.data.site_xpos[robot.eef_site_id].copy()

    def eef_mat(self) -> np.ndarray:
        robot = self.env.robots[0]
        return self.env.sim.data.site_xmat[robot.eef_site_id].reshape(3, 3).copy()

    def gripper_opening(self) -> float:
        robot = self.env.robots[0]
        qpos = self.env.sim.data.qpos[robot._ref_gripper_joint_pos_indexes]
        return float(np.abs(qpos).sum())

    def in_contact_with_gripper(self, name: str) -> bool:
        robot = self.env.robots[0]
        return bool(self.env.check_contact(robot.gripper, self.env.get_object(name)))


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_angle(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle (angle in [0, pi])."""
    cos = np.clip((np.trace(mat) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-6:  # angle ~ pi: axis from the symmetric part
        w, v = np.linalg.eigh((mat + np.eye(3)) / 2)
        axis = v[:, np.argmax(w)]
        norm = 1.0
    return axis / norm * angle


def _goal_pick_place(env) -> tuple[str, str] | None:
    """``(object, target)`` of a single On/In goal on a movable object, else None."""
    goal = env.parsed_problem["goal_state"]
    if len(goal) != 1:
        return None
    predicate = [str(x).lower() for x in goal[0]]
    if len(predicate) != 3 or predicate[0] not in ("on", "in"):
        return None
    obj, target = goal[0][1], goal[0][2]
    if obj not in env.objects_dict:
        return None
    if predicate[0] == "in" and target in env.object_sites_dict:
        parent = getattr(env.object_states_dict.get(target), "parent_name", None)
        if parent in env.fixtures_dict:
            return None  # into a drawer / microwave: it must be opened first (not scripted)
    if target not in env.objects_dict and target not in env.fixtures_dict and target not in env.object_sites_dict:
        return None
    return obj, target


def expert_supports(env) -> bool:
    """Whether :class:`LiberoScriptedExpert` covers this task (a robosuite LIBERO env
    or a :class:`~torchrl_ript.envs.libero.LiberoContextEnv`)."""
    env = getattr(env, "robosuite_env", env)
    return _goal_pick_place(env) is not None


class LiberoScriptedExpert:
    """A closed-loop pick-and-place controller on privileged simulator state.

    Call :meth:`reset` after each env reset, then :meth:`act` before each
    action; it reads the current poses and returns the next ``[7]`` action.

    Args:
        env: a :class:`~torchrl_ript.envs.libero.LiberoContextEnv` (or its
            ``robosuite_env``) of a covered task (see :func:`expert_supports`).

    Keyword Args:
        max_speed (float): cap on the translation action (1 = 5 cm per
            20 Hz step). Defaults to ``1.0``.
        hover (float): height of the approach point above the grasp point
            (m). Defaults to ``0.08``.

    Examples:
        >>> from torchrl_ript.envs.libero import LiberoContextEnv
        >>> env = LiberoContextEnv("libero_object", 0, camera_size=32)  # doctest: +SKIP
        >>> expert = LiberoScriptedExpert(env)  # doctest: +SKIP
        >>> expert.pick, expert.target  # doctest: +SKIP
        ('alphabet_soup_1', 'basket_1_contain_region')
    """

    def __init__(self, env, *, max_speed: float = 1.0, hover: float = 0.08) -> None:
        self.env = getattr(env, "robosuite_env", env)
        goal = _goal_pick_place(self.env)
        if goal is None:
            raise ValueError(
                f"no scripted expert for the goal {self.env.parsed_problem['goal_state']}: only "
                "single On/In goals on a movable object (pick and place) are covered; see "
                "torchrl_ript.envs.libero.experts.expert_supports."
            )
        self.pick, self.target = goal
        self._goal = str(self.env.parsed_problem["goal_state"][0][0]).lower()
        self.scene = _Scene(self.env)
        self.max_speed = float(max_speed)
        self.hover = float(hover)
        self.reset()

    # -- planning -------------------------------------------------------------
    def reset(self) -> None:
        """Plan from the current simulator state (call after every env reset)."""
        self.phase = "approach"
        self.phase_steps = 0
        self.attempts = 0
        self._last_z = np.inf
        self._plan_grasp()

    def _is_bowl(self) -> bool:
        return "bowl" in self.pick

    def _plan_grasp(self) -> None:
        scene = self.scene
        box = scene.box(self.pick)
        center = scene.body_pos(self.pick)
        pts = scene.corners(self.pick)
        height = box.size[2]
        if self._is_bowl():
            # Rim grasp: the fingers straddle the rim wall, closing radially. Of the
            # rim points in 8 directions, take the one whose hand footprint (the
            # hand spans ~10 cm each way along the closing axis) is farthest from
            # other objects and fixtures.
            radius = min(box.size[0], box.size[1]) / 2
            grasp_z = box.hi[2] - 0.025
            best = None
            for angle in np.deg2rad(np.arange(0, 360, 45)):
                d = np.array([np.cos(angle), np.sin(angle)])
                rim = box.center[:2] + (radius - 0.012) * d
                normal = np.array([-d[1], d[0]])
                footprint = [rim + a * d + b * normal for a in (-0.1, 0.0, 0.1) for b in (-0.03, 0.03)]
                # prefer the side facing the robot (-x) a little: shorter reach, less rotation
                score = self._clearance(footprint, grasp_z) - 0.01 * d[0]
                if best is None or score > best[0]:
                    best = (score, d, rim)
            _, d, rim = best
            self.grasp_point = np.array([rim[0], rim[1], grasp_z])
            yaw = np.arctan2(-d[0], d[1])  # closing axis (-sin, cos) along d
            self.grasp_yaw = float((yaw + np.pi / 2) % np.pi - np.pi / 2)
        else:
            # Narrowest horizontal extent across the fingers (yaw symmetric mod pi).
            best = None
            for yaw in np.deg2rad(np.arange(-90, 90, 7.5)):
                axis = np.array([-np.sin(yaw), np.cos(yaw)])  # closing axis of Rz(yaw) @ _DOWN
                proj = pts[:, :2] @ axis
                width = proj.max() - proj.min()
                score = width + 0.004 * abs(yaw)  # ties: least rotation
                if best is None or score < best[0]:
                    best = (score, yaw, width)
            self.grasp_yaw = float(best[1])
            point = box.center.copy()
            point[:2] = center[:2]
            # grasp 3 cm below the top, or at mid-height; the finger tips reach 1.25 cm
            # below the grip site (the pads 0.5 cm), so not lower than 1.4 cm above
            # the object's bottom
            point[2] = max(box.hi[2] - 0.03, box.lo[2] + height / 2, box.lo[2] + 0.014)
            self.grasp_point = point
        self.pick_height = height
        self.target_rot = _rot_z(self.grasp_yaw) @ _DOWN

    def _clearance(self, points, z_min: float) -> float:
        """Horizontal distance from ``points`` to the nearest other object or fixture
        reaching above ``z_min`` (the table and floor are ignored)."""
        best = np.inf
        for name in list(self.env.objects_dict) + list(self.env.fixtures_dict):
            if name == self.pick:
                continue
            box = self._obstacle_box(name)
            if box is None or box.hi[2] < z_min:
                continue
            for xy in points:
                d = np.maximum(np.maximum(box.lo[:2] - xy, xy - box.hi[:2]), 0.0)
                best = min(best, float(np.linalg.norm(d)))
        return best

    def _obstacle_box(self, name: str) -> _Box | None:
        try:
            box = self.scene.box(name)
        except (KeyError, ValueError):
            return None
        if box.size[0] > 0.6 or box.size[1] > 0.6:  # floor / table
            return None
        return box

    def _target_parent(self) -> str:
        """The object or fixture that carries the target (the target itself if it is one)."""
        if self.target in self.env.object_sites_dict:
            state = self.env.object_states_dict.get(self.target)
            parent = getattr(state, "parent_name", None)
            if parent in self.env.objects_dict or parent in self.env.fixtures_dict:
                return parent
        return self.target

    def _target_xy_z(self) -> tuple[np.ndarray, float]:
        """Where the held object's centre should go (xy), and the surface height under it."""
        scene = self.scene
        if self.target in self.env.object_sites_dict:
            site = self.env.object_sites_dict[self.target]
            pos = scene.site_pos(self.target)
            size = np.asarray(getattr(site, "size", (0.0, 0.0, 0.0)), dtype=np.float64).reshape(-1)
            half_z = float(size[2]) if size.size == 3 else 0.0
            if self._goal == "in":
                surface = pos[2] - half_z  # inside the region: its floor
            else:
                surface = pos[2] + half_z  # on top of it
            return pos[:2].copy(), float(surface)
        box = scene.box(self.target)
        return scene.body_pos(self.target)[:2], float(box.hi[2])

    def _clear_height(self, start_xy: np.ndarray, end_xy: np.ndarray) -> float:
        """Top of everything (but the held object) near the straight path start -> end."""
        names = [n for n in list(self.env.objects_dict) + list(self.env.fixtures_dict) if n != self.pick]
        seg = end_xy - start_xy
        length2 = float(seg @ seg) or 1e-9
        top = -np.inf
        for name in names:
            box = self._obstacle_box(name)
            if box is None:
                continue
            center = box.center[:2]
            t = np.clip(float((center - start_xy) @ seg) / length2, 0.0, 1.0)
            nearest = start_xy + t * seg
            gap = np.maximum(np.maximum(box.lo[:2] - nearest, nearest - box.hi[:2]), 0.0)
            if np.linalg.norm(gap) < 0.06:
                top = max(top, float(box.hi[2]))
        return top

    # -- control --------------------------------------------------------------
    def _move(self, goal: np.ndarray, gripper: float, speed: float | None = None) -> tuple[np.ndarray, float]:
        pos = self.scene.eef_pos()
        err = goal - pos
        cap = self.max_speed if speed is None else speed
        delta = np.clip(err / _POS_SCALE, -cap, cap)
        rot_err = _axis_angle(self.target_rot @ self.scene.eef_mat().T)
        drot = np.clip(rot_err / _ROT_SCALE, -1.0, 1.0)
        return np.concatenate([delta, drot, [gripper]]), float(np.linalg.norm(err))

    def _next(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def act(self) -> np.ndarray:
        """The next action ``[7]`` (float64, in ``[-1, 1]``)."""
        scene = self.scene
        self.phase_steps += 1
        phase, steps = self.phase, self.phase_steps
        eef = scene.eef_pos()
        if phase == "approach":
            goal = self.grasp_point + np.array([0.0, 0.0, self.hover])
            action, dist = self._move(goal, _OPEN)
            rot = np.linalg.norm(_axis_angle(self.target_rot @ scene.eef_mat().T))
            if (dist < 0.015 and rot < 0.08) or steps > 60:
                self._next("descend")
            return action
        if phase == "descend":
            action, dist = self._move(self.grasp_point, _OPEN, speed=0.5)
            stalled = steps > 5 and abs(eef[2] - self._last_z) < 0.0005  # fingers on the surface
            self._last_z = eef[2]
            if dist < 0.004 or stalled or steps > 40:
                self._close_pos = eef.copy()  # hold here: pressing on a surface jams the fingers
                self._next("close")
            return action
        if phase == "close":
            action, _ = self._move(self._close_pos, _CLOSED)
            if steps >= 12:
                self.held_offset = scene.body_pos(self.pick) - eef
                self.lift_z = None
                self._lift_xy = eef[:2].copy()
                self._next("lift")
            return action
        if phase == "lift":
            target_xy, surface = self._target_xy_z()
            obj_box = scene.box(self.pick)
            below = eef[2] - obj_box.lo[2]  # how far the object hangs below the hand
            if self.lift_z is None:
                clear = self._clear_height(self._lift_xy, target_xy)
                self.lift_z = max(surface, clear, obj_box.lo[2]) + below + 0.04
            goal = np.array([self._lift_xy[0], self._lift_xy[1], self.lift_z])
            # slow at first: a jerk right after closing loses flat objects
            action, dist = self._move(goal, _CLOSED, speed=0.3 if steps <= 8 else None)
            if dist < 0.015 or steps > 40:
                if not self._holding():
                    return self._retry(action)
                self._next("transport")
            return action
        if phase == "transport":
            target_xy, _ = self._target_xy_z()
            obj = scene.body_pos(self.pick)
            goal = eef.copy()
            goal[:2] = eef[:2] + (target_xy - obj[:2])
            goal[2] = self.lift_z
            action, dist = self._move(goal, _CLOSED)
            if steps % 10 == 0 and not self._holding():
                return self._retry(action)
            if dist < 0.01 or steps > 80:
                self._next("lower")
            return action
        if phase == "lower":
            target_xy, surface = self._target_xy_z()
            obj = scene.body_pos(self.pick)
            obj_box = scene.box(self.pick)
            below = eef[2] - obj_box.lo[2]
            goal = eef.copy()
            goal[:2] = eef[:2] + (target_xy - obj[:2])
            goal[2] = surface + below + 0.015
            action, dist = self._move(goal, _CLOSED, speed=0.5)
            stalled = steps > 5 and abs(eef[2] - self._last_z) < 0.0005  # resting on the target
            self._last_z = eef[2]
            if dist < 0.01 or stalled or steps > 40:
                self._next("release")
            return action
        if phase == "release":
            action, _ = self._move(eef, _OPEN)
            if steps >= 8:
                self._next("retreat")
            return action
        # retreat: straight up, gripper open, and hold there
        goal = eef.copy()
        goal[2] = self.lift_z if self.lift_z is not None else eef[2] + 0.1
        action, _ = self._move(goal, _OPEN)
        return action

    def _holding(self) -> bool:
        obj = self.scene.body_pos(self.pick)
        eef = self.scene.eef_pos()
        return bool(np.linalg.norm(obj - eef - self.held_offset) < 0.03)

    def _retry(self, action: np.ndarray) -> np.ndarray:
        self.attempts += 1
        self._plan_grasp()
        self._next("approach")
        action = action.copy()
        action[-1] = _OPEN
        return action


@dataclass
class ExpertEpisode:
    """Actions of one expert episode and whether (and when) it succeeded."""

    actions: np.ndarray  # [T, 7] executed actions (noise included)
    expert_actions: np.ndarray  # [T, 7] noise-free
    success: bool
    steps: int
    context_state: np.ndarray  # the start (unpadded flattened MuJoCo state, before settling)


def run_expert_episode(
    env,
    state,
    *,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    max_steps: int | None = None,
    expert: LiberoScriptedExpert | None = None,
) -> ExpertEpisode:
    """Run the expert from ``state`` on the physics alone (no rendering).

    Args:
        env: a :class:`~torchrl_ript.envs.libero.LiberoContextEnv` (``fast_step=True``).
        state: the start, a flattened MuJoCo state of the env's task (padded or not).

    Keyword Args:
        noise: std of Gaussian noise added to each action (then clipped to ``[-1, 1]``).
        rng: the noise generator.
        max_steps: time limit in actions (default: the env's ``max_episode_steps``).
        expert: reuse an expert built for this env.

    Returns:
        :class:`ExpertEpisode`, stopped at the first success.
    """
    state = np.asarray(state, dtype=np.float64).reshape(-1)[: env.true_state_dim]
    max_steps = env.max_episode_steps if max_steps is None else int(max_steps)
    env.reset_physics(state)
    if expert is None:
        expert = LiberoScriptedExpert(env)
    else:
        expert.reset()
    rng = rng if rng is not None else np.random.default_rng(0)
    actions, clean = [], []
    success = False
    for _ in range(max_steps):
        action = expert.act()
        clean.append(action.copy())
        if noise:
            action = action + noise * rng.standard_normal(action.shape)
        action = np.clip(action, -1.0, 1.0)
        actions.append(action)
        if env.step_physics(action):
            success = True
            break
    return ExpertEpisode(
        np.asarray(actions), np.asarray(clean), success, len(actions), state.copy()
    )


def default_demo_starts(num_init_states: int = 50) -> list[int]:
    """Init-state indices tried for demos by default: the last first (49, 48, ...).

    Evaluation uses the first init states (``eval.per_task`` of the examples),
    so demos come from the other end.

    Examples:
        >>> default_demo_starts(5)
        [4, 3, 2, 1, 0]
    """
    return list(range(num_init_states - 1, -1, -1))


def record_libero_demos(
    suite: str,
    task_id: int,
    n: int,
    *,
    out: str | os.PathLike,
    starts: Sequence[int] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    camera_size: int = 128,
    max_steps: int | None = None,
    fresh_seed: int | None = None,
    progress: bool = True,
    env=None,
) -> Path:
    """Record ``n`` successful expert demos of one task into ``out/<task name>_demo.hdf5``.

    Args:
        suite: a LIBERO suite.
        task_id: the task's index in the suite.
        n: successful demos to keep.

    Keyword Args:
        out: output folder (created).
        starts: benchmark init-state indices to try, in order (default
            :func:`default_demo_starts`: 49, 48, ...); failed episodes are
            skipped, so more starts than ``n`` may be used.
        noise: Gaussian action noise std (action units; ``0``: clean expert).
        seed: seed of the noise.
        camera_size: image size of both cameras (LIBERO's datasets: 128).
        max_steps: time limit in actions (default: the suite's
            :data:`~torchrl_ript.envs.libero.LIBERO_MAX_STEPS`).
        fresh_seed: start from fresh placements instead of init states
            (:func:`~torchrl_ript.envs.libero.contexts.sample_libero_starts` with
            this seed; ``starts`` then index those; fixture-free scenes only), so
            all 50 init states stay free for evaluation.
        progress: tqdm progress bar.
        env: a :class:`~torchrl_ript.envs.libero.LiberoContextEnv` of this
            task without ``action_chunk``, to reuse (built if ``None``).

    Returns:
        The path of the written file. Its ``env_args`` attribute records how the
        demos were made; each demo's attributes its init-state index
        (``init_state_index``), the expert's phase retries (``regrasps``).

    Raises:
        RuntimeError: fewer than ``n`` episodes succeeded over the starts
            (the partial file keeps the successes).

    Examples:
        >>> import tempfile
        >>> path = record_libero_demos("libero_object", 0, 1, out=tempfile.mkdtemp(),
        ...                            camera_size=32, progress=False)  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5'
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}.")
    tasks = libero_suite_tasks(suite)
    if not 0 <= int(task_id) < len(tasks):
        raise ValueError(f"task id {task_id} out of range for {suite} ({len(tasks)} tasks).")
    task = tasks[int(task_id)]
    if fresh_seed is None:
        contexts = libero_contexts(suite, task_ids=[int(task_id)])
    else:  # as many fresh starts as the starts asked for (default: 3 n + 10)
        count = (max(int(s) for s in starts) + 1) if starts is not None else 3 * n + 10
        contexts = libero_contexts(suite, task_ids=[int(task_id)], source="sampled",
                                   num_per_task=count, sample_seed=int(fresh_seed))
    rows = contexts.task_contexts(int(task_id))
    if starts is None:
        starts = default_demo_starts(len(rows)) if fresh_seed is None else list(range(len(rows)))
    starts = [int(s) for s in starts]
    for s in starts:
        if not 0 <= s < len(rows):
            raise ValueError(f"start {s} out of range: {suite} task {task_id} has {len(rows)} init states.")
    own_env = env is None
    if own_env:
        env = LiberoContextEnv(suite, int(task_id), camera_size=camera_size,
                               max_episode_steps=max_steps)
    if env.action_chunk is not None:
        raise ValueError("pass an env without action_chunk: demos store one action per step.")
    if not expert_supports(env):
        raise ValueError(
            f"{suite} task {task_id} ({task.name}) has no scripted expert: covered are the "
            "pick-and-place goals (every libero_object and libero_spatial task, libero_goal's "
            "put-X-on/in-Y tasks)."
        )
    expert = LiberoScriptedExpert(env)
    rng = np.random.default_rng([int(seed), int(task_id), 7])
    out = Path(out)
    path = out / f"{task.name}_demo.hdf5"
    env_args = libero_demo_env_args(
        env, suite, task_id,
        max_steps=int(env.max_episode_steps),
        expert="torchrl_ript.envs.libero.experts.LiberoScriptedExpert",
        noise=float(noise),
        seed=int(seed),
        starts="init_files" if fresh_seed is None else f"sampled (seed {int(fresh_seed)})",
    )
    bar = tqdm(total=n, desc=f"{suite}[{task_id}]", unit="demo", disable=not progress)
    tried = 0
    try:
        with DemoWriter(path, task_name=task.name, language_instruction=str(task.language),
                        env_args=env_args) as writer:
            for start in starts:
                if writer.num_demos >= n:
                    break
                tried += 1
                state = contexts.states[rows[start]]
                episode = run_expert_episode(env, state, noise=noise, rng=rng, expert=expert)
                bar.set_postfix(tried=tried)
                if not episode.success:
                    continue
                writer.add_demo(**_render_replay(env, episode, int(task_id)),
                                extras={"expert_actions": episode.expert_actions.astype(np.float64)},
                                attrs={"init_state_index" if fresh_seed is None else "fresh_start_index": start,
                                       "regrasps": expert.attempts})
                bar.update(1)
            kept = writer.num_demos
    finally:
        bar.close()
        if own_env:
            env.close()
    if kept < n:
        raise RuntimeError(
            f"{suite} task {task_id}: only {kept} of {tried} expert episodes succeeded, {n} "
            f"wanted; pass more starts, lower noise or raise max_steps. (The partial file "
            f"{path} holds the {kept} successes.)"
        )
    return path


def _render_replay(env, episode: ExpertEpisode, task_id: int) -> dict:
    """Replay an episode through the rendering env; its arrays in LIBERO's layout."""
    # robosuite is optional (installed with LIBERO by scripts/install_libero.sh)
    from robosuite.utils.transform_utils import quat2axisangle

    state = pad_state(episode.context_state, env.context_state_dim)
    td = env.reset(context_reset_td(state[None], torch.tensor([task_id]))[0])
    steps: dict[str, list] = {}
    success_at = None
    for t, action in enumerate(episode.actions):
        _record(steps, td, env, quat2axisangle)
        td["action"] = torch.as_tensor(action, dtype=torch.float32)
        td = env.step(td)["next"]
        if bool(td["success"]):
            success_at = t
            break
        if bool(td["done"]):
            break
    if success_at != episode.steps - 1:
        raise RuntimeError(
            f"the rendered replay of an expert episode diverged from the physics-only run "
            f"(success at step {success_at}, expected {episode.steps - 1}): the env is not "
            "deterministic from its context; check that nothing else steps this simulator."
        )
    # the replay ran float32 actions: store exactly those
    actions = np.asarray(episode.actions, dtype=np.float32).astype(np.float64)
    length = len(actions)
    rewards = np.zeros(length, np.float32)
    rewards[-1] = 1.0
    dones = np.zeros(length, np.uint8)
    dones[-1] = 1
    return dict(
        obs={name[4:]: np.stack(v) for name, v in steps.items() if name.startswith("obs/")},
        actions=actions,
        states=np.stack(steps["states"]),
        rewards=rewards,
        dones=dones,
        context_state=episode.context_state,
    )


def measure_expert(
    suite: str,
    task_ids: Sequence[int],
    *,
    starts: Sequence[int] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Success rate and speed of the expert (physics only) per task over ``starts``."""
    tasks = libero_suite_tasks(suite)
    results = []
    for task_id in task_ids:
        contexts = libero_contexts(suite, task_ids=[int(task_id)])
        rows = contexts.task_contexts(int(task_id))
        use = list(range(len(rows))) if starts is None else [int(s) for s in starts]
        env = LiberoContextEnv(suite, int(task_id), camera_size=32, wrist_camera=False)
        try:
            if not expert_supports(env):
                results.append({"suite": suite, "task_id": int(task_id), "task": tasks[int(task_id)].name,
                                "supported": False})
                continue
            expert = LiberoScriptedExpert(env)
            rng = np.random.default_rng([int(seed), int(task_id), 7])
            wins, lengths, regrasps, failed, actions = 0, [], 0, [], 0
            begin = time.perf_counter()
            for start in tqdm(use, desc=f"{suite}[{task_id}]", disable=not progress):
                episode = run_expert_episode(env, contexts.states[rows[start]], noise=noise, rng=rng,
                                             expert=expert)
                wins += episode.success
                regrasps += expert.attempts
                actions += episode.steps
                if episode.success:
                    lengths.append(episode.steps)
                else:
                    failed.append(start)
            wall = time.perf_counter() - begin
        finally:
            env.close()
        results.append({
            "suite": suite, "task_id": int(task_id), "task": tasks[int(task_id)].name, "supported": True,
            "episodes": len(use), "successes": wins, "success_rate": wins / max(len(use), 1),
            "mean_steps": float(np.mean(lengths)) if lengths else None, "regrasps": regrasps,
            "failed_starts": failed, "wall_s": wall, "noise": noise,
            "actions_per_s": actions / wall if wall else None,  # incl. the expert's own compute
        })
    return results


def main(argv: Sequence[str] | None = None) -> list:
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_ript.envs.libero.experts",
        description="Record successful scripted-expert LIBERO demos (one HDF5 per task, LIBERO's layout), "
        "or measure the expert's success rate (--measure).",
    )
    parser.add_argument("--suite", required=True, help="libero_object | libero_spatial | libero_goal | ...")
    parser.add_argument("--tasks", nargs="+", type=int, default=None, help="task indices (default: all covered)")
    parser.add_argument("--n", type=int, default=10, help="successful demos per task")
    parser.add_argument("--out", default="demos", help="output folder")
    parser.add_argument("--starts", nargs="+", type=int, default=None,
                        help="init-state indices to try in order (default: 49, 48, ...)")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise std")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--camera-size", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=None, help="time limit (default: the suite's)")
    parser.add_argument("--fresh-seed", type=int, default=None,
                        help="start from fresh placements with this seed instead of init states "
                        "(fixture-free scenes: libero_object), keeping all 50 init states for evaluation")
    parser.add_argument("--measure", action="store_true",
                        help="no files: run the expert (physics only) from every start and print "
                        "its success rate and speed per task as JSON lines")
    args = parser.parse_args(argv)
    task_ids = args.tasks if args.tasks is not None else list(range(len(libero_suite_tasks(args.suite))))
    if args.measure:
        results = measure_expert(args.suite, task_ids, starts=args.starts, noise=args.noise, seed=args.seed)
        for row in results:
            print(json.dumps(row), flush=True)
        return results
    paths = []
    for task_id in task_ids:
        paths.append(record_libero_demos(
            args.suite, task_id, args.n, out=args.out, starts=args.starts, noise=args.noise,
            seed=args.seed, camera_size=args.camera_size, max_steps=args.max_steps, fresh_seed=args.fresh_seed,
        ))
        print(f"wrote {paths[-1]}", flush=True)
    return paths


if __name__ == "__main__":
    main()
