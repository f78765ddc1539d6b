"""LIBERO end to end: demos -> SFT (or a checkpoint) -> evaluate -> RIPT -> evaluate.

    python examples/ript_libero.py                                   # CPU default: scripted demos, ~30 min
    python examples/ript_libero.py demos.dir=/data/libero/libero_object        # your LIBERO HDF5 demos
    python examples/ript_libero.py policy.checkpoint=sft_policy.pt             # skip SFT
    python examples/ript_libero.py --config-name ript_libero_paper demos.dir=...  # paper's QueST scale (GPU)
    python examples/ript_libero.py --config-name ript_libero_oft policy.pretrained=/models/vla demos.dir=...
    python examples/ript_libero.py --config-name ript_libero_smoke             # CI, about a minute

Without ``demos.dir`` the scripted experts (``torchrl_ript.envs.libero.experts``)
record ``demos.per_task`` demos per task, from benchmark init states that are
not among the ``eval.per_task`` held-out ones. Several tasks train one policy:
every env worker accepts a context of any of them (``LiberoMultiTaskEnv``).
Ends by printing one JSON line: tasks, sr_before (sr_sft when SFT ran here),
sr_ript, n_eval, p_value (one-sided paired McNemar test of the headline
mode on the same held-out contexts), iterations, env_steps, wall_s.
"""
import time
import warnings
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_ript.envs.libero.setup import ensure_libero

ensure_libero()  # LIBERO's config, assets and GL backend, before anything imports libero

from torchrl_ript.envs.libero import LIBERO_MAX_STEPS  # noqa: E402
from torchrl_ript.envs.libero.contexts import libero_contexts  # noqa: E402
from torchrl_ript.envs.libero.experts import record_libero_demos  # noqa: E402
from torchrl_ript.envs.libero.factory import (  # noqa: E402
    find_libero_demo_files,
    libero_env_fn,
    read_libero_demo_files,
    write_random_libero_demos,
)
from torchrl_ript.models.checkpoint import save_policy  # noqa: E402
from torchrl_ript.trainers import EXPLORATION_MODES, evaluate_modes, exploration_modes, save_video  # noqa: E402
from torchrl_ript.trainers.ddp import init_distributed  # noqa: E402
from torchrl_ript.trainers.factory import make_batched_env, make_collector, make_logger, make_ript_trainer  # noqa: E402
from torchrl_ript.trainers.pipeline import (  # noqa: E402
    load_or_train_policy,
    print_result_line,
    ript_config,
    set_num_threads,
    sft_options,
)
from torchrl_ript.trainers.plots import plot_success_rate  # noqa: E402
from torchrl_ript.trainers.stats import paired_success_test  # noqa: E402

ACTION_DIM, STATE_DIM = 7, 9  # LIBERO: delta eef pose + gripper; joints (7) + gripper qpos (2)


def demo_files(cfg, out: Path, task_ids, num_inits: int, needed: bool) -> list[Path] | None:
    if cfg.demos.dir:
        return find_libero_demo_files(cfg.demos.dir, cfg.suite, task_ids)
    if not needed:
        return None
    if cfg.demos.random:
        print(f"[demos] writing {cfg.demos.random_per_task} RANDOM rollouts per task "
              "(a policy cloned from them cannot succeed)", flush=True)
        return write_random_libero_demos(
            out / "demos", cfg.suite, task_ids, num_demos=cfg.demos.random_per_task,
            num_steps=cfg.demos.random_steps, camera_size=cfg.env.camera_size, seed=cfg.demos.seed,
        )
    # scripted experts, from the init states the evaluation does not use (the last first)
    starts = list(range(num_inits - 1, cfg.eval.per_task - 1, -1))
    if len(starts) < cfg.demos.per_task:
        raise ValueError(
            f"the scripted demos start from benchmark init states outside the {cfg.eval.per_task} "
            f"held out per task, and only {len(starts)} of {num_inits} are left for "
            f"{cfg.demos.per_task} demos: lower eval.per_task or demos.per_task, or give demos.dir."
        )
    print(f"[demos] recording {cfg.demos.per_task} scripted-expert demos per task (noise "
          f"{cfg.demos.noise}) from init states {starts[0]}, {starts[1] if len(starts) > 1 else ''}...",
          flush=True)
    paths = []
    for task_id in task_ids:
        paths.append(record_libero_demos(
            cfg.suite, task_id, cfg.demos.per_task, out=out / "demos", starts=starts, noise=cfg.demos.noise,
            # the expert gets at least the suite's official time (env.max_steps may be shorter)
            seed=cfg.demos.seed, camera_size=cfg.env.camera_size,
            max_steps=max(LIBERO_MAX_STEPS[cfg.suite], cfg.env.max_steps or 0),
            progress=cfg.progress,
        ))
    return paths


def train_contexts(cfg, paths, task_ids):
    source = cfg.contexts.source
    if source == "auto":
        source = "demos" if cfg.demos.dir else "init_files"
    if source == "demos":
        if not paths:
            raise ValueError("contexts.source=demos needs demo files (demos.dir, or the scripted demos).")
        contexts = libero_contexts(cfg.suite, task_ids=task_ids, source="demos", demo_paths=paths,
                                   seed=cfg.contexts.seed)
    elif source == "init_files":
        every = libero_contexts(cfg.suite, task_ids=task_ids, source="init_files", seed=cfg.contexts.seed)
        # the held-out evaluation starts are never trained on
        keep = torch.cat([every.task_contexts(t)[cfg.eval.per_task:] for t in task_ids])
        if keep.numel() == 0:
            raise ValueError(
                f"eval.per_task={cfg.eval.per_task} holds out every benchmark init state: lower it "
                "or use contexts.source=demos."
            )
        contexts = every.subset(keep)
    else:
        raise ValueError(f"contexts.source must be auto, demos or init_files, got {source!r}.")
    print(f"[contexts] {len(contexts)} RIPT contexts from {source}", flush=True)
    return contexts


def first_per_task(contexts, task_ids, n):
    return contexts.subset(torch.cat([contexts.task_contexts(t)[:n] for t in task_ids]))


@hydra.main(config_path="configs", config_name="ript_libero", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    distributed = init_distributed()  # None unless started by torchrun
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if distributed is not None and not distributed.is_main:  # its own demos/SFT files; rank 0 checkpoints
        out = out / f"rank{distributed.rank}"
    set_num_threads(cfg.threads)
    modes = exploration_modes(cfg.eval.exploration)  # a bad name fails before any work
    torch.manual_seed(cfg.ript.seed)
    task_ids = [int(t) for t in cfg.task_ids]
    max_steps = cfg.env.max_steps or LIBERO_MAX_STEPS[cfg.suite]
    inits = libero_contexts(cfg.suite, task_ids=task_ids, source="init_files")
    num_inits = min(len(inits.task_contexts(t)) for t in task_ids)
    if not 0 < cfg.eval.per_task <= num_inits:
        raise ValueError(f"eval.per_task must be in [1, {num_inits}] (benchmark init states per task).")
    held_out = first_per_task(inits, task_ids, cfg.eval.per_task)
    sft_needed = not cfg.policy.checkpoint
    paths = demo_files(cfg, out, task_ids, num_inits, needed=sft_needed or cfg.contexts.source == "demos")
    demos_s = time.perf_counter() - start
    image_keys = (("observation", "image"), ("observation", "wrist_image"))[: 1 + bool(cfg.env.wrist_camera)]
    bundle, sft_info = load_or_train_policy(
        cfg.policy.checkpoint,
        build=dict(kind=cfg.policy.kind, preset=cfg.policy.preset, action_dim=ACTION_DIM,
                   state_dim=STATE_DIM, image_keys=image_keys, image_size=cfg.policy.image_size,
                   overrides=OmegaConf.to_container(cfg.policy.overrides),
                   encoder_overrides=OmegaConf.to_container(cfg.policy.encoder),
                   pretrained=cfg.policy.pretrained),
        files_fn=lambda: read_libero_demo_files(paths, max_demos=cfg.demos.max_per_task),
        sft_options=sft_options(cfg.sft, seed=cfg.ript.seed),
        save_to=out / "sft_policy.pt",
        # top-k/temperature are token-policy options; continuous heads sample their Laplace
        sampling=OmegaConf.to_container(cfg.policy.sampling) if cfg.policy.kind == "quest" else None,
        progress=cfg.progress,
    )
    config = ript_config(OmegaConf.to_container(cfg.ript, resolve=True), bundle, max_env_steps=max_steps)
    env_fn = libero_env_fn(
        cfg.suite, task_ids, max_live_tasks=cfg.env.max_live_tasks, camera_size=cfg.env.camera_size,
        wrist_camera=cfg.env.wrist_camera, max_episode_steps=max_steps, action_chunk=bundle.n_exec,
        render_quality=cfg.env.render_quality,
    )
    # One pool for rollouts and evaluation: they never run at the same time.
    env = make_batched_env(env_fn, config.num_envs)

    def full_eval(tag):
        result = evaluate_modes(env, bundle.policy, held_out, horizon=config.max_decisions, modes=modes,
                                record_videos=cfg.eval.videos, progress=cfg.progress)
        for i, frames in enumerate(result.pop("videos")):
            save_video(frames, out / "videos" / f"{tag}_{i}.gif")
        for mode, scores in result["by_mode"].items():
            print(f"[{tag}] SR ({mode}) {scores['sr']:.3f} on {scores['n']} held-out benchmark "
                  f"init states, per task {scores['per_task']}", flush=True)
        return result

    eval_start = time.perf_counter()
    before = full_eval("before")
    result = {"suite": cfg.suite, "task_ids": task_ids,
              "tasks": [held_out.task_names[t] for t in task_ids], "policy": bundle.kind,
              "eval_modes": modes, "n_eval": len(held_out), "sr_before": before["success_rate"],
              "sr_before_per_task": before["per_task"], "sr_before_by_mode": before["by_mode"],
              "sr_sft": before["success_rate"] if sft_needed else None,
              "demos_s": demos_s, "sft_s": sft_info["sft_s"], "eval_before_s": time.perf_counter() - eval_start}
    if cfg.stages.ript:
        during = cfg.eval.during_training_per_task
        contexts = train_contexts(cfg, paths, task_ids)
        # collector.backend=ray, or this rank's share under torchrun (None: the local default)
        collector = make_collector(config, cfg.collector, env_fn=env_fn, policy=bundle.policy,
                                   train_contexts=contexts, sampled_action_key=bundle.sampled_key,
                                   distributed=distributed)
        trainer = make_ript_trainer(
            config, env=env if collector is None else None, collector=collector, distributed=distributed,
            eval_env=env if during else None, actor=bundle.actor, policy=bundle.policy,
            sampled_action_key=bundle.sampled_key, train_contexts=contexts,
            eval_contexts=first_per_task(held_out, task_ids, during) if during else None,
            logger=make_logger(cfg.logger.kind, out / "logs", "ript_libero"),
            checkpoint_dir=out / "checkpoints", eval_exploration_type=EXPLORATION_MODES[modes[0]],
            progress=cfg.progress,
        )
        resumed = trainer.resume(out / "checkpoints" / "latest.pt")
        if during >= cfg.eval.per_task and not resumed:  # same contexts: reuse the "before" evaluation
            trainer.eval_history.append({"success_rate": before["success_rate"], "step": 0,
                                         **{f"sr/{k}": v for k, v in before["per_task"].items()}})
        ript_start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("always", RuntimeWarning)  # the draw-limit warning, every step
            trainer.train()
        ript_s = time.perf_counter() - ript_start
        eval_start = time.perf_counter()
        final = full_eval("ript")
        trainer.collector.shutdown()  # closes the env pool
        if collector is not None:  # the pool only evaluated
            env.close()
        save_policy(bundle.network, out / "ript_policy.pt", extra={"ript_steps": trainer.step})
        skipped = sum(int(r.get("train/skipped", 0)) for r in trainer.history)
        if skipped:
            print(f"[ript] {skipped} of {len(trainer.history)} RIPT iterations made no update: every "
                  f"group of K={config.group_size} rollouts had the same reward (all failed or all "
                  "succeeded), so there was no learning signal. RIPT needs a policy that sometimes "
                  "succeeds (SR_before > 0) and sometimes fails.", flush=True)
        history = trainer.eval_history or [
            {"step": 0, "success_rate": before["success_rate"]},
            {"step": trainer.step, "success_rate": final["success_rate"]},
        ]
        plot_success_rate(history, trainer.history, out / "success_rate.png",
                          title=f"RIPT on {cfg.suite} tasks {task_ids}",
                          baseline={m: r["sr"] for m, r in before["by_mode"].items()},
                          eval_label=f"held-out SR ({modes[0]})",
                          final={f"{m}, {cfg.eval.per_task}/task": r["sr"] for m, r in final["by_mode"].items()})
        # paired test on the same held-out contexts, per mode; the headline mode's p-value on top
        paired = {m: paired_success_test(before["by_mode"][m]["outcomes"], final["by_mode"][m]["outcomes"])
                  for m in modes}
        for mode, test in paired.items():
            print(f"[ript] {mode}: SR {test['sr_before']:.3f} -> {test['sr_after']:.3f} on {test['n']} "
                  f"held-out contexts; {test['gained']} newly solved, {test['lost']} lost; one-sided "
                  f"paired (McNemar) p = {test['p_value']:.4f}", flush=True)
        collect = [r for r in trainer.history if "collect/groups_completed" in r]
        result.update(sr_ript=final["success_rate"], sr_ript_per_task=final["per_task"],
                      sr_ript_by_mode=final["by_mode"], p_value=paired[modes[0]]["p_value"],
                      paired_by_mode=paired, iterations=trainer.step, iterations_without_update=skipped,
                      env_steps=trainer.env_steps, ript_s=ript_s, eval_after_s=time.perf_counter() - eval_start,
                      groups_completed=sum(r["collect/groups_completed"] for r in collect),
                      groups_kept=sum(r["collect/groups_kept"] for r in collect),
                      groups_all_success=sum(r["collect/groups_all_success"] for r in collect),
                      groups_all_failure=sum(r["collect/groups_all_failure"] for r in collect))
    else:
        env.close()
        result.update(sr_ript=None, p_value=None, iterations=0, env_steps=0)
    result.update(wall_s=time.perf_counter() - start, output_dir=str(out),
                  config=OmegaConf.to_container(cfg, resolve=True))
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
