"""LIBERO end to end: demos -> SFT (or a checkpoint) -> evaluate -> RIPT -> evaluate.

    python examples/ript_libero.py demos.dir=/data/libero/libero_spatial        # task 0, QueST
    python examples/ript_libero.py task_ids='[0,1,2]' demos.dir=...             # one policy, 3 tasks
    python examples/ript_libero.py policy.checkpoint=sft_policy.pt              # skip SFT
    python examples/ript_libero.py --config-name ript_libero_oft demos.dir=...  # OFT recipe
    python examples/ript_libero.py --config-name ript_libero_smoke              # CPU minutes

Several tasks train one policy: every env worker accepts a context of any of
them (``LiberoMultiTaskEnv`` builds one simulator per task it meets). Ends by
printing one JSON line: tasks, sr_before (sr_sft when SFT ran here), sr_ript,
iterations, env_steps, wall_s.
"""
import time
import warnings
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_ript.envs.libero_setup import ensure_libero

ensure_libero()  # LIBERO's config, assets and GL backend, before anything imports libero

from torchrl_ript.envs.libero_contexts import libero_contexts  # noqa: E402
from torchrl_ript.envs.libero import LIBERO_MAX_STEPS  # noqa: E402
from torchrl_ript.envs.libero_factory import (  # noqa: E402
    find_libero_demo_files,
    libero_env_fn,
    read_libero_demo_files,
    write_random_libero_demos,
)
from torchrl_ript.models.checkpoint import save_policy  # noqa: E402
from torchrl_ript.trainers import EXPLORATION_MODES, evaluate_modes, exploration_modes, save_video  # noqa: E402
from torchrl_ript.trainers.ddp import init_distributed, make_collector  # noqa: E402
from torchrl_ript.trainers.factory import make_batched_env, make_logger, make_ript_trainer  # noqa: E402
from torchrl_ript.trainers.pipeline import (  # noqa: E402
    load_or_train_policy,
    print_result_line,
    ript_config,
    set_num_threads,
    sft_options,
)
from torchrl_ript.trainers.plots import plot_success_rate  # noqa: E402

ACTION_DIM, STATE_DIM = 7, 9  # LIBERO: delta eef pose + gripper; joints (7) + gripper qpos (2)


def demo_files(cfg, out: Path, needed: bool) -> list[Path] | None:
    if cfg.demos.dir:
        return find_libero_demo_files(cfg.demos.dir, cfg.suite, cfg.task_ids)
    if not needed:
        return None
    if not cfg.demos.random:
        raise ValueError(
            "no demonstrations: set demos.dir to a folder of LIBERO HDF5 files (one per task), "
            "or policy.checkpoint to skip SFT with contexts.source=init_files "
            "(demos.random=true writes random rollouts: smoke runs only)."
        )
    print(f"[demos] demos.dir is empty: writing {cfg.demos.random_per_task} RANDOM rollouts per task "
          "(a policy cloned from them cannot succeed)", flush=True)
    return write_random_libero_demos(
        out / "demos", cfg.suite, cfg.task_ids, num_demos=cfg.demos.random_per_task,
        num_steps=cfg.demos.random_steps, camera_size=cfg.env.camera_size, seed=cfg.demos.seed,
    )


def train_contexts(cfg, paths):
    source = cfg.contexts.source
    if source == "auto":
        source = "demos" if paths else "init_files"
    if source == "demos" and not paths:
        raise ValueError("contexts.source=demos needs demos.dir (LIBERO demo files).")
    contexts = libero_contexts(cfg.suite, task_ids=list(cfg.task_ids), source=source,
                               demo_paths=paths if source == "demos" else None, seed=cfg.contexts.seed)
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
    sft_needed = not cfg.policy.checkpoint
    paths = demo_files(cfg, out, needed=sft_needed or cfg.contexts.source == "demos")
    image_keys = (("observation", "image"), ("observation", "wrist_image"))[: 1 + bool(cfg.env.wrist_camera)]
    bundle, sft_info = load_or_train_policy(
        cfg.policy.checkpoint,
        build=dict(kind=cfg.policy.kind, preset=cfg.policy.preset, action_dim=ACTION_DIM,
                   state_dim=STATE_DIM, image_keys=image_keys, image_size=cfg.policy.image_size,
                   overrides=OmegaConf.to_container(cfg.policy.overrides),
                   encoder_overrides=OmegaConf.to_container(cfg.policy.encoder)),
        files_fn=lambda: read_libero_demo_files(paths, max_demos=cfg.demos.max_per_task),
        sft_options=sft_options(cfg.sft, seed=cfg.ript.seed),
        save_to=out / "sft_policy.pt",
        sampling=OmegaConf.to_container(cfg.policy.sampling),
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
    held_out = libero_contexts(cfg.suite, task_ids=task_ids, source="init_files")
    held_out = first_per_task(held_out, task_ids, cfg.eval.per_task)

    def full_eval(tag):
        result = evaluate_modes(env, bundle.policy, held_out, horizon=config.max_decisions, modes=modes,
                                record_videos=cfg.eval.videos, progress=cfg.progress)
        for i, frames in enumerate(result.pop("videos")):
            save_video(frames, out / "videos" / f"{tag}_{i}.gif")
        for mode, scores in result["by_mode"].items():
            print(f"[{tag}] SR ({mode}) {scores['sr']:.3f} on {result['num_rollouts']} benchmark "
                  f"contexts, per task {scores['per_task']}", flush=True)
        return result

    before = full_eval("before")
    result = {"suite": cfg.suite, "task_ids": task_ids,
              "tasks": [held_out.task_names[t] for t in task_ids], "policy": bundle.kind,
              "eval_modes": modes, "sr_before": before["success_rate"], "sr_before_per_task": before["per_task"],
              "sr_before_by_mode": before["by_mode"],
              "sr_sft": before["success_rate"] if sft_needed else None, "sft_s": sft_info["sft_s"]}
    if cfg.stages.ript:
        during = cfg.eval.during_training_per_task
        contexts = train_contexts(cfg, paths)
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
        with warnings.catch_warnings():
            warnings.simplefilter("always", RuntimeWarning)  # the draw-limit warning, every step
            trainer.train()
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
                          title=f"RIPT on {cfg.suite} tasks {task_ids}", baseline=before["success_rate"],
                          eval_label=f"held-out SR ({modes[0]})",
                          final={f"{m}, {cfg.eval.per_task}/task": r["sr"] for m, r in final["by_mode"].items()})
        result.update(sr_ript=final["success_rate"], sr_ript_per_task=final["per_task"],
                      sr_ript_by_mode=final["by_mode"], iterations=trainer.step, iterations_without_update=skipped,
                      env_steps=trainer.env_steps)
    else:
        env.close()
        result.update(sr_ript=None, iterations=0, env_steps=0)
    result.update(wall_s=time.perf_counter() - start, output_dir=str(out),
                  config=OmegaConf.to_container(cfg, resolve=True))
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
