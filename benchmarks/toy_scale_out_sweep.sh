#!/usr/bin/env bash
# The toy example on one process, 2 Ray workers and 2 DDP ranks, seeds 0-2 (~5 min on 2 cores):
#   bash benchmarks/toy_scale_out_sweep.sh      (outputs in outputs/sweep/)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "start $(date) load: $(uptime)"
mkdir -p outputs/sweep
for seed in 0 1 2; do
  for mode in local ray ddp; do
    out=outputs/sweep/${mode}_s${seed}
    t0=$SECONDS
    case $mode in
      local) python examples/ript_toy.py progress=false logger.kind=none ript.seed=$seed hydra.run.dir=$out > $out.log 2>&1 ;;
      ray) python examples/ript_toy.py progress=false logger.kind=none ript.seed=$seed collector.backend=ray collector.num_workers=2 hydra.run.dir=$out > $out.log 2>&1 ;;
      ddp) torchrun --standalone --nproc_per_node=2 examples/ript_toy.py progress=false logger.kind=none ript.seed=$seed hydra.run.dir=$out > $out.log 2>&1 ;;
    esac
    echo "$mode seed=$seed rc=$? wall=$((SECONDS - t0))s $(grep -o 'held-out success rate: [0-9.]* -> [0-9.]*' $out.log)"
  done
done
echo "end $(date) load: $(uptime)"
