#!/usr/bin/env bash
# MetaWorld transfer experiments (issue #11, phase 1): pretrain -> 1-demo SFT -> RIPT,
# with the levers compared on one shared SFT checkpoint.
#
#   bash benchmarks/metaworld_transfer.sh [OUT] [SOURCE] [TARGET]
#       default OUT=runs/metaworld_transfer, SOURCE=drawer-open-v3, TARGET=drawer-close-v3
#
# Every run writes OUT/<run>/result.json (SR before/after over the same 100 held-out
# starts, n_eval, p_value, informative-group statistics), a success-rate plot and GIFs;
# `python benchmarks/metaworld_summary.py OUT/*/` prints the table of the README.
# The recipe is the transfer config's (examples/configs/ript_metaworld_transfer.yaml),
# identical for every pair; only the task names change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/metaworld_transfer}"
SRC="${2:-drawer-open-v3}"
TGT="${3:-drawer-close-v3}"
RUN=(python examples/ript_metaworld.py --config-name ript_metaworld_transfer progress=false
     pretrain.tasks="[$SRC]" tasks="[$TGT]")

# 1. 50 scripted demos of the source -> pretrain; 1 demo of the target -> SFT -> SR of the SFT policy
"${RUN[@]}" hydra.run.dir="$OUT/sft1" stages.ript=false
SFT1=(demos.dir="$OUT/sft1/demos" policy.checkpoint="$OUT/sft1/sft_policy.pt")

# 2. RIPT from the demo's start and 31 jittered variants (5 cm), uniform context sampling
"${RUN[@]}" hydra.run.dir="$OUT/ript_uniform" "${SFT1[@]}"

# 3. the same with the adaptive context sampler
"${RUN[@]}" hydra.run.dir="$OUT/ript_adaptive" "${SFT1[@]}" contexts.sampler=adaptive

# 4. no context noise: the demo's exact start only (the paper's D_context = first states of D_sft)
"${RUN[@]}" hydra.run.dir="$OUT/ript_exact_start" "${SFT1[@]}" contexts.jitter.copies=1

python benchmarks/metaworld_summary.py "$OUT"/*/
