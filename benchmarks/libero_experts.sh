#!/bin/bash
# Success rate and speed of the scripted LIBERO experts (physics only, no rendering), per task,
# from the benchmark init states; one JSON line per task into benchmarks/results/libero_experts.jsonl.
#   bash benchmarks/libero_experts.sh            # libero_object x 50 starts, spatial and goal x 20
#   STARTS_OBJECT=20 bash benchmarks/libero_experts.sh
# About 3-4 s per episode on one CPU core (~125 actions at ~40 actions/s).
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
out=benchmarks/results/libero_experts.jsonl
mkdir -p benchmarks/results
: > "$out"
run() {  # suite, number of starts, task ids...
    local suite=$1 n=$2; shift 2
    python -m torchrl_ript.envs.libero.experts --suite "$suite" --measure --starts $(seq 0 $((n - 1))) \
        --tasks "$@" | grep '^{' | tee -a "$out"
}
echo "start $(date -Is) load: $(uptime)"
run libero_object "${STARTS_OBJECT:-50}" 0 1 2 3 4 5 6 7 8 9
run libero_spatial "${STARTS_OTHER:-20}" 0 1 2 3 4 5 6 7 8 9
run libero_goal "${STARTS_OTHER:-20}" 1 2 4 6 8 9   # the pick-and-place goals (others: not covered)
echo "end $(date -Is) load: $(uptime)"
python - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    print(f"{r['suite']:15s} {r['task_id']}  {r['successes']:3d}/{r['episodes']:<3d} {r['success_rate']:.2f}  "
          f"mean {r['mean_steps']:.0f} actions  {r['actions_per_s']:.0f} actions/s  {r['task']}")
PY
