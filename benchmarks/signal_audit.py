"""Signal audit: does one RIPT update follow the reward, or the noise?

    python benchmarks/signal_audit.py --config-name ript_metaworld policy.checkpoint=runs/x/sft_policy.pt
    python benchmarks/signal_audit.py --config-name ript_metaworld ript.lr=1e-5 policy.checkpoint=...
    python benchmarks/signal_audit.py --config-name ript_libero policy.checkpoint=...
    python benchmarks/signal_audit.py --config-name ript_libero_smoke ript.dynamic_sampling=false  # ~1 min

Takes an example's config (``examples/configs/<name>.yaml``) and overrides
exactly as the example does; ``ript_libero*`` configs audit
``examples/ript_libero.py``, ``ript_metaworld*`` ones ``examples/ript_metaworld.py``.
It builds what the example builds (the example's own ``prepare`` and
``ript_inputs``: demos, SFT or ``policy.checkpoint``, RIPT config, envs,
contexts, the configured collector and trainer), then

1. collects ONE batch with the configured collector (B, K, dynamic sampling);
2. runs the configured PPO update (``RIPTTrainer.update``: optimizer, lr,
   epochs, minibatch, clip) twice, each from the same starting weights, a
   fresh optimizer and the same minibatch order: with the real advantages,
   and with the same magnitudes under random signs per trajectory (the null
   update, seeded by ``ript.seed``);
3. after each, rescores every collected decision (the loss's log-prob path,
   valid decisions only) and prints: the share of decisions whose ratio left
   the clip band, KL per decision (k1, k3), the gradient norm (the trainer's
   ``train/grad_norm``: the mean over gradient steps of the total norm before
   clipping) and, for continuous policies, the scale per action dimension and
   each dimension's share of the log-ratio variance. Before each update the
   collected log-probs are checked against the unchanged weights' (~1e-5).

With ``policy.checkpoint`` null the example's own demos and SFT run first:
slow (on 2 CPU cores ``ript_metaworld``'s SFT took 6.5 min, ``ript_libero``'s
scripted demos + SFT 9.6 min) but exactly the example's policy; its
``sft_policy.pt`` is saved in the run folder, so pass it as
``policy.checkpoint`` next time (with ``demos.dir=<that run>/demos`` the
demos are not recorded again either).

A table (real vs null), then the LAST stdout line: one JSON object with
``out_of_band_real``, ``out_of_band_null``, ``kl_real``, ``kl_null`` (k3),
k1/k3, gradient norms, scale statistics, the config and overrides, decisions,
trajectories, wall time and load average; also written to
``<run folder>/signal_audit.json`` (default run folder
``outputs/signal_audit/<config>/<time>``; ``hydra.run.dir=...`` changes it).
How to read the numbers: ``benchmarks/README.md``, "Signal audit".
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when a test imports this file

from example_config import example_for, load_example, run_on_example_config  # noqa: E402

# the share of decisions a random-sign update may push out of the clip band (benchmarks/README.md, "Signal audit")
NULL_BAND_LIMIT = 0.10


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def _dims(values, digits: int = 3) -> str:
    return "-" if values is None else "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def table(result: dict) -> str:
    """The real-vs-null table."""
    real, null = result["real"], result["null"]
    rows = [
        ("decisions outside the clip band", "out_of_band"),
        ("KL per decision, k3 = mean(r-1-log r)", "k3"),
        ("KL per decision, k1 = mean(log p_old - log p_new)", "k1"),
        ("max |log r|", "max_abs_log_ratio"),
        ("decisions that left the top-k support", "support_exit"),
        ("grad norm (mean of pre-clip norms)", "grad_norm"),
        ("advantage, mean over decisions", "advantage_decision_mean"),
        ("decisions with a negative advantage", "negative_advantage_decision_share"),
        ("trainer clip_fraction (during the update)", "train_clip_fraction"),
        ("trainer kl_approx (during the update)", "train_kl_approx"),
        ("before update: max |collected - rescored| logp", "logp_check_max_abs_diff"),
        ("before update: sum of rescored logp", "logp_before_sum"),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{'':<{width}}{'real':>14}{'null':>14}"]
    for label, key in rows:
        lines.append(f"{label:<{width}}{_fmt(real.get(key)):>14}{_fmt(null.get(key)):>14}")
    if "scale_before" in real:
        lines.append("")
        lines.append("scale per action dimension (continuous policy; mean / min over decisions and chunk):")
        lines.append(f"  before  mean {_dims(real['scale_before']['mean'])}  min {_dims(real['scale_before']['min'])}")
        for name, run in (("real", real), ("null", null)):
            s = run["scale_after"]
            lines.append(f"  {name:<6}  mean {_dims(s['mean'])}  min {_dims(s['min'])}")
        lines.append("share of the log-ratio variance per action dimension (adds up to 1):")
        for name, run in (("real", real), ("null", null)):
            lines.append(f"  {name:<6}  {_dims(run['log_ratio_variance_share'])}")
    # a per-batch diagnostic, not a learning verdict: measured both ways (benchmarks/README.md, "Signal audit")
    verdict = (f"the null update stays inside the clip band for at least {1 - NULL_BAND_LIMIT:.0%} of the decisions: "
               "one batch cannot move the policy far on noise, but the step may also be too small to learn in the "
               "configured iterations; compare real with null"
               if result["null_in_band"] else
               f"the null update leaves the clip band for more than {NULL_BAND_LIMIT:.0%} of the decisions: one batch "
               "moves the policy far on random signs too (lower ript.lr or ript.ppo_epochs to keep it in band); "
               "whether the run still learns, only its held-out gain with a paired test says, best against a "
               "control run on these random signs (ript.null_advantages=true) from the same SFT policy")
    lines += ["", f"{result['n_trajectories']} trajectories, {result['n_decisions']} decisions, clip "
              f"{result['clip_epsilon']}, lr {result['lr']}, {result['real']['gradient_steps']} gradient steps; "
              f"same start for both runs: {result['same_start']}", f"verdict: {verdict}"]
    return "\n".join(lines)


def run_audit(cfg, *, config_name: str, overrides: list[str], out: Path) -> dict:
    import torch
    from omegaconf import OmegaConf

    from torchrl_ript.trainers.audit import collect_one_batch, make_audit_trainer, signal_audit

    start = time.perf_counter()
    load_start = os.getloadavg()
    name = example_for(config_name, cfg)
    example = load_example(name)
    prep = example.prepare(cfg, out)
    setup_s = time.perf_counter() - start
    config = prep.config
    trainer = make_audit_trainer(config, **example.ript_inputs(cfg, prep))
    try:
        collect_start = time.perf_counter()
        batch, stats = collect_one_batch(trainer)
        collect_s = time.perf_counter() - collect_start
        if batch.shape[0] == 0:
            raise SystemExit(
                f"signal_audit: the collector found no informative group in {stats.get('contexts_drawn')} "
                f"contexts ({stats.get('groups_all_failure')} groups all failed, {stats.get('groups_all_success')} "
                "all succeeded): RIPT has nothing to learn from this policy on these contexts. Audit a policy "
                "that sometimes succeeds and sometimes fails, or add ript.dynamic_sampling=false to audit the "
                "uniform groups (their advantages are zero)."
            )
        update_start = time.perf_counter()
        result = signal_audit(trainer, batch, seed=config.seed)
        update_s = time.perf_counter() - update_start
    finally:
        trainer.collector.shutdown()
        env = getattr(prep, "env", None)
        if env is not None:  # LIBERO's shared pool (the default collector closed it already)
            env.close(raise_if_closed=False)
    real, null = result["real"], result["null"]
    scale = None
    if "scale_before" in real:
        scale = {"before": real["scale_before"], "after_real": real["scale_after"],
                 "after_null": null["scale_after"],
                 "log_ratio_variance_share_real": real["log_ratio_variance_share"],
                 "log_ratio_variance_share_null": null["log_ratio_variance_share"]}
    summary = {k: v for k, v in result.items() if k not in ("real", "null")}
    line = {
        **summary,
        "null_in_band": result["out_of_band_null"] <= NULL_BAND_LIMIT,
        "null_band_limit": NULL_BAND_LIMIT,
        "scale": scale,
        "logp_check_max_abs_diff": max(real["logp_check_max_abs_diff"], null["logp_check_max_abs_diff"]),
        "config_name": config_name,
        "overrides": overrides,
        "example": f"examples/ript_{name}.py",
        "policy": prep.bundle.kind,
        "checkpoint": cfg.policy.checkpoint,
        "ratio": config.ratio,
        "clip_epsilon": config.clip_epsilon,
        "lr": real["lr"],
        "ppo_epochs": config.ppo_epochs,
        "minibatch_size": config.minibatch_size,
        "max_grad_norm": config.max_grad_norm,
        "group_size": config.group_size,
        "trajs_per_batch": config.trajs_per_batch,
        "dynamic_sampling": config.dynamic_sampling,
        "max_decisions": config.max_decisions,
        "null_seed": config.seed,
        "collection": stats,
        "sft_s": prep.sft_info.get("sft_s", 0.0),
        "setup_s": setup_s,
        "collect_s": collect_s,
        "update_s": update_s,
        "wall_s": time.perf_counter() - start,
        "load_avg": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "load_avg_end_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "output_dir": str(out),
        "real": real,
        "null": null,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    return line


if __name__ == "__main__":
    run_on_example_config("signal_audit", __doc__, run_audit, table, sys.argv[1:])
