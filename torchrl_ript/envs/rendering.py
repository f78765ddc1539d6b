"""Headless MuJoCo rendering helpers shared by the RIPT simulators.

Two things decide how fast a CPU machine renders MuJoCo scenes:

- the OpenGL backend: without a display, MuJoCo needs ``MUJOCO_GL=egl`` or
  ``MUJOCO_GL=osmesa`` (with ``PYOPENGL_PLATFORM=osmesa``). It reads the
  variable when ``mujoco.gl_context`` is first imported, so
  :func:`select_gl_backend` must run before any rendering module is imported
  (``mujoco.Renderer`` imports it lazily, gymnasium/robosuite at import);
- the render quality: MuJoCo's defaults (a 4096² shadow map, reflections, 4x
  multisampling) cost ~10x on Mesa's software rasteriser for images that look
  nearly the same at 128 px. :func:`apply_fast_render_model` and
  :func:`apply_fast_render_scene` switch them off.

These helpers only touch MuJoCo structures (``MjModel``, ``MjvScene``), so
MetaWorld, robosuite/LIBERO and plain MuJoCo envs can all use them.

Examples:
    >>> from torchrl_ript.envs.rendering import select_gl_backend
    >>> backend = select_gl_backend()  # before importing mujoco rendering
    >>> backend in ("egl", "osmesa", "glfw", "glx", "cgl", "wgl")
    True
"""
from __future__ import annotations

import ctypes.util
import importlib
import os
import sys

__all__ = [
    "RENDER_QUALITIES",
    "select_gl_backend",
    "apply_fast_render_model",
    "apply_fast_render_scene",
    "apply_render_quality",
]

RENDER_QUALITIES = ("fast", "high")


def select_gl_backend(preferred: str | None = None) -> str:
    """Choose a headless OpenGL backend for MuJoCo, unless the user chose one.

    Leaves an existing ``MUJOCO_GL`` untouched (and sets
    ``PYOPENGL_PLATFORM=osmesa`` along with ``MUJOCO_GL=osmesa`` if missing).
    Otherwise picks ``preferred`` or, on Linux, EGL when ``libEGL`` is found,
    else OSMesa when ``libOSMesa`` is found. On macOS/Windows it does nothing
    (their native backends work without a display server).

    MuJoCo reads the variable once, when ``mujoco.gl_context`` is imported
    (``import torchrl`` already does); if that module was loaded with another
    backend it is re-executed so that later ``mujoco.Renderer`` objects use
    the chosen one. Libraries that open their own GL contexts at import
    (robosuite) still need this called before they are imported.

    Args:
        preferred: ``"egl"`` or ``"osmesa"`` to force one backend when the user
            has not set ``MUJOCO_GL``.

    Returns:
        The value of ``MUJOCO_GL`` in effect (``""`` when none is needed).
    """
    chosen = os.environ.get("MUJOCO_GL")
    if not chosen:
        if preferred is not None:
            chosen = preferred
        elif sys.platform.startswith("linux"):
            chosen = _find_linux_backend()
        else:
            return ""
        os.environ["MUJOCO_GL"] = chosen
    if chosen == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    elif chosen == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    _rebind_mujoco_gl_context(chosen)
    return chosen


def _rebind_mujoco_gl_context(chosen: str) -> None:
    # ``import torchrl`` already imports ``mujoco.gl_context`` (its custom MuJoCo
    # envs), which then picked GLFW, unusable headless. The module only reads
    # MUJOCO_GL at import, and ``mujoco.Renderer`` looks ``GLContext`` up on it
    # at call time, so re-executing it in place switches the backend, provided
    # PyOpenGL has not been loaded for another platform yet.
    module = sys.modules.get("mujoco.gl_context")
    if module is None or getattr(module, "_MUJOCO_GL", chosen) == chosen.lower():
        return
    if "OpenGL" in sys.modules and chosen in ("egl", "osmesa"):
        raise RuntimeError(
            f"MuJoCo rendering was already set up with MUJOCO_GL="
            f"{module._MUJOCO_GL!r} and PyOpenGL is loaded: set MUJOCO_GL={chosen} "
            "in the environment before starting Python (or call "
            "select_gl_backend() before importing torchrl/gymnasium/robosuite)."
        )
    importlib.reload(module)


def _find_linux_backend() -> str:
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    raise RuntimeError(
        "No headless OpenGL library found for MuJoCo rendering: install EGL or "
        "OSMesa (Debian/Ubuntu: `apt-get install libegl1 libgl1-mesa-dri "
        "libosmesa6`), or set MUJOCO_GL yourself."
    )


def apply_fast_render_model(model) -> None:
    """Turn off multisampling and the shadow map on an ``mujoco.MjModel``.

    Must run *before* the rendering context (``mujoco.Renderer``,
    ``MjrContext``) is created: the offscreen buffers are sized from these
    fields at creation. Does not change the physics.
    """
    model.vis.quality.offsamples = 0
    model.vis.quality.shadowsize = 0


def apply_fast_render_scene(scene) -> None:
    """Turn off shadows and reflections on an ``mujoco.MjvScene``.

    Scene flags persist across ``mjv_updateScene`` calls: set them once after
    creating the renderer (e.g. ``renderer.scene``).
    """
    import mujoco

    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def apply_render_quality(quality: str, *, model=None, scene=None) -> None:
    """Apply ``"fast"`` settings to a model and/or scene; ``"high"`` keeps MuJoCo's.

    Examples:
        >>> apply_render_quality("high")  # nothing to do
        >>> apply_render_quality("medium")
        Traceback (most recent call last):
        ...
        ValueError: render_quality must be one of ('fast', 'high'), got 'medium'.
    """
    if quality not in RENDER_QUALITIES:
        raise ValueError(
            f"render_quality must be one of {RENDER_QUALITIES}, got {quality!r}."
        )
    if quality == "high":
        return
    if model is not None:
        apply_fast_render_model(model)
    if scene is not None:
        apply_fast_render_scene(scene)
