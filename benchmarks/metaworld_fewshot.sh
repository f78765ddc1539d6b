#!/usr/bin/env bash
# The MetaWorld experiments of the README, from scratch: 5-shot SFT -> RIPT on
# 5 tasks, the same without dynamic sampling, and the 1-demo rescue on reach-v3.
#
#   bash benchmarks/metaworld_fewshot.sh [OUT]      # default OUT=runs/metaworld_fewshot
#
# Every run writes OUT/<run>/result.json (the SR of the sampling policy and of
# the mode, per task), a success-rate plot and GIFs. On a 2-core CPU each RIPT
# run takes 30-60 minutes; the whole script about 4 hours.
# The measured numbers in the README came from these settings with the SFT
# checkpoint trained once and reused by every RIPT run, as here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/metaworld_fewshot}"
TASKS='[button-press-topdown-v3,drawer-close-v3,reach-v3,window-open-v3,door-open-v3]'
# the few-shot config (examples/configs/ript_metaworld_fewshot.yaml): those 5 tasks, QueST small,
# 64 px corner2, top-k 5 sampling, ratio=step, lr 3e-6, K=8, B=64, 15 iterations, 10 PPO epochs,
# minibatch 8; 50 held-out starts per task, the sampling policy and the mode evaluated
RUN=(python examples/ript_metaworld.py --config-name ript_metaworld_fewshot progress=false)
RIPT=(stages.eval_sft=false)

# 1. 5 scripted demos per task (noise 0.2) -> SFT -> SR of the SFT policy
"${RUN[@]}" hydra.run.dir="$OUT/sft5" tasks="$TASKS" stages.ript=false
SFT5=(demos.dir="$OUT/sft5/demos" policy.checkpoint="$OUT/sft5/sft_policy.pt")

# 2. RIPT, 15 iterations of B=64
"${RUN[@]}" hydra.run.dir="$OUT/ript" tasks="$TASKS" "${SFT5[@]}" "${RIPT[@]}"

# 2b. a second seed
"${RUN[@]}" hydra.run.dir="$OUT/ript_seed1" tasks="$TASKS" "${SFT5[@]}" "${RIPT[@]}" ript.seed=1

# 3. the same with dynamic sampling off
"${RUN[@]}" hydra.run.dir="$OUT/ript_no_dynamic_sampling" tasks="$TASKS" "${SFT5[@]}" "${RIPT[@]}" \
    ript.dynamic_sampling=false

# 4. 1-demo rescue: SFT on one demo of reach-v3, then RIPT (B=16: two groups per iteration)
"${RUN[@]}" hydra.run.dir="$OUT/sft1_reach" tasks='[reach-v3]' demos.per_task=1 stages.ript=false
"${RUN[@]}" hydra.run.dir="$OUT/rescue_reach" tasks='[reach-v3]' demos.dir="$OUT/sft1_reach/demos" \
    policy.checkpoint="$OUT/sft1_reach/sft_policy.pt" "${RIPT[@]}" ript.trajs_per_batch=16 ript.lr=1e-5 \
    eval.during_training_per_task=20

tail -n 1 -q "$OUT"/*/result.json
