#!/usr/bin/env bash
# Install everything torchrl-ript needs (MetaWorld, LIBERO, QueST, language, HF, tests).
#
#   bash scripts/setup.sh                          # uses `python` on PATH
#   PYTHON=/path/to/venv/bin/python bash scripts/setup.sh
#
# Idempotent: every step checks first and is skipped when already done, so a
# re-run is a fast no-op. Steps:
#   1. Debian packages for headless rendering (Mesa EGL / OSMesa), apt-get only
#      when missing (needs root; otherwise prints the command and fails);
#   2. torch: only when not importable, the pinned CPU wheel (scripts/constraints.txt).
#      An existing torch is kept whatever its version;
#   3. this package, editable, with all extras, under the constraints (torch and
#      mujoco are never replaced);
#   4. LIBERO and its assets (scripts/install_libero.sh: --no-deps installs);
#   5. a smoke import from outside the source tree.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CONSTRAINTS="$HERE/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

PYTHON="${PYTHON:-python}"
# A relative path (./venv/bin/python) must survive the `cd`s below. Symlinks are
# kept as they are: a venv's python only works under its own path.
if [[ "$PYTHON" == */* && "$PYTHON" != /* ]]; then
    PYTHON="$PWD/$PYTHON"
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup: python interpreter '$PYTHON' not found (set PYTHON=/path/to/python)" >&2
    exit 1
fi
export PYTHON
PIP=("$PYTHON" -m pip install --no-input)

T0=$SECONDS
step() { echo "[setup] $*"; }

# --- 1. Debian packages for headless GL -------------------------------------
APT_PKGS=(libegl1 libgl1-mesa-dri libosmesa6 libglvnd0)
if command -v dpkg >/dev/null 2>&1; then
    MISSING=()
    for p in "${APT_PKGS[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || MISSING+=("$p")
    done
    if ((${#MISSING[@]})); then
        CMD="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${MISSING[*]}"
        if [[ "$(id -u)" != "0" ]]; then
            echo "[setup] error: missing system packages for headless rendering: ${MISSING[*]}" >&2
            echo "[setup] run as root:  sudo sh -c '$CMD'" >&2
            echo "[setup] then run this script again." >&2
            exit 1
        fi
        step "installing system packages: ${MISSING[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    else
        step "system packages present: ${APT_PKGS[*]}"
    fi
else
    # Not Debian: only warn, the user's distribution has its own Mesa packages.
    if ! ldconfig -p 2>/dev/null | grep -q "libEGL.so.1"; then
        echo "[setup] warning: no dpkg and no libEGL.so.1 found; install Mesa EGL/OSMesa for headless rendering" >&2
    fi
fi

# --- 2. torch ---------------------------------------------------------------
# Checked without importing torch (seconds): installed metadata and a findable module.
TORCH_VERSION_CMD='import importlib.metadata as m, importlib.util as u; assert u.find_spec("torch"); print(m.version("torch"))'
if TORCH_VERSION="$("$PYTHON" -c "$TORCH_VERSION_CMD" 2>/dev/null)"; then
    step "torch $TORCH_VERSION already installed: kept"
else
    TORCH_PIN="$(grep -E '^torch==' "$CONSTRAINTS")"
    step "installing $TORCH_PIN"
    "${PIP[@]}" -q "$TORCH_PIN"
    TORCH_VERSION="$("$PYTHON" -c "$TORCH_VERSION_CMD")"
fi

# Effective constraints: the project's pins, but the torch actually installed
# (a user's own torch is never replaced by the pin).
EFFECTIVE="$(mktemp)"
trap 'rm -f "$EFFECTIVE"' EXIT
grep -vE '^torch([=<>!~ ]|$)' "$CONSTRAINTS" > "$EFFECTIVE"
echo "torch==${TORCH_VERSION}" >> "$EFFECTIVE"

# --- 3. this package with all extras -----------------------------------------
# Checked without pip (pip resolving takes seconds): the distribution is installed
# editable from this tree and every requirement of pyproject's dependencies and
# [all] extra is satisfied.
package_ok() {
    (cd / && "$PYTHON" - "$ROOT" <<'PY'
import importlib.metadata as md, json, os, re, sys
root = sys.argv[1]
try:
    import tomllib
except ImportError:  # Python 3.10: no tomllib, let pip decide
    sys.exit(1)
try:
    from packaging.requirements import Requirement
except ImportError:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:
        sys.exit(1)
try:
    dist = md.distribution("torchrl-ript")
except md.PackageNotFoundError:
    print("torchrl-ript not installed"); sys.exit(1)
url = json.loads(dist.read_text("direct_url.json") or "{}")
if not url.get("dir_info", {}).get("editable") or \
        os.path.realpath(url.get("url", "").removeprefix("file://")) != os.path.realpath(root):
    print("torchrl-ript not installed editable from", root); sys.exit(1)
project = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["project"]
extras = project.get("optional-dependencies", {})
reqs, todo, seen = list(project.get("dependencies", [])), ["all"], set()
while todo:
    e = todo.pop()
    if e in seen:
        continue
    seen.add(e)
    for r in extras.get(e, []):
        req = Requirement(r)
        if re.sub(r"[-_.]+", "-", req.name.lower()) == "torchrl-ript":
            todo.extend(req.extras)
        else:
            reqs.append(r)
missing = []
for r in reqs:
    req = Requirement(r)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        v = md.version(req.name)
    except md.PackageNotFoundError:
        missing.append(req.name); continue
    if not req.specifier.contains(v, prereleases=True):
        missing.append(f"{req.name} ({v} does not match {req.specifier})")
if missing:
    print("missing:", ", ".join(missing)); sys.exit(1)
PY
    )
}
if WHY="$(package_ok)"; then
    step "torchrl-ript[all] already installed (editable): nothing to do"
else
    step "installing torchrl-ript[all] (editable) under the constraints: $WHY"
    (cd "$ROOT" && "${PIP[@]}" -q -c "$EFFECTIVE" -e ".[all]")
fi

# --- 4. LIBERO ----------------------------------------------------------------
step "LIBERO (scripts/install_libero.sh)"
bash "$HERE/install_libero.sh"

# --- 5. smoke import, from outside the tree (proves the install, not the cwd) --
(cd / && MUJOCO_GL="${MUJOCO_GL:-egl}" "$PYTHON" -c "import torchrl_ript, metaworld, torch; print('[setup] smoke import ok: torchrl_ript', torchrl_ript.__file__, '| torch', torch.__version__, '| metaworld', metaworld.__file__)")
step "done in $((SECONDS - T0)) s"
