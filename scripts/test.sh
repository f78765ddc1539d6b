#!/usr/bin/env bash
# Install everything (scripts/setup.sh, a fast no-op when already done), then run
# the test suite and the package's doctests.
#
#   bash scripts/test.sh                 # default: every test not marked slow
#   bash scripts/test.sh -m slow         # extra arguments go to pytest
#   bash scripts/test.sh tests/collectors -x   # a path given here replaces the defaults
#   PYTHON=/path/to/venv/bin/python bash scripts/test.sh
#
# Exit status: pytest's, except that "no tests collected" (pytest's 5) fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python}"
if [[ "$PYTHON" == */* && "$PYTHON" != /* ]]; then
    PYTHON="$PWD/$PYTHON"
fi
export PYTHON
T0=$SECONDS

bash "$HERE/setup.sh"

# Headless rendering (Mesa EGL); a caller's choice (e.g. osmesa) is kept.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

cd "$ROOT"
# Lint first (seconds): pyflakes/pycodestyle rules from pyproject.toml's [tool.ruff].
echo "[test] $PYTHON -m ruff check torchrl_ript tests examples benchmarks"
"$PYTHON" -m ruff check torchrl_ript tests examples benchmarks

# pytest's targets, markers and doctests come from pyproject.toml (a bare `pytest`
# runs the same): the tests and the package's doctests, slow tests deselected.
echo "[test] $PYTHON -m pytest -q -ra --durations=30 --timeout=900 $*"
set +e
"$PYTHON" -m pytest -q -ra --durations=30 --timeout=900 "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "[test] error: pytest collected no tests (exit 5); check the selection/arguments." >&2
    rc=1
fi
echo "[test] exit $rc, total wall time $((SECONDS - T0)) s (setup included)"
exit $rc
