"""MetaWorld end to end: scripted demos -> SFT -> evaluate -> RIPT -> evaluate.

    python examples/ript_metaworld.py                       # the default main job
    python examples/ript_metaworld.py policy.kind=regression ript.group_size=8
    python examples/ript_metaworld.py collector.backend=ray collector.num_workers=2   # Ray rollout workers
    torchrun --standalone --nproc_per_node=2 examples/ript_metaworld.py               # 2 DDP learners

Ends by printing one JSON line: tasks, sr_sft, sr_ript, iterations, env_steps, wall_s.
"""
import time
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_ript.envs.rendering import select_gl_backend

select_gl_backend()  # before anything imports MuJoCo rendering

from torchrl_ript.data.demos import read_demos  # noqa: E402
from torchrl_ript.models.checkpoint import save_policy  # noqa: E402
from torchrl_ript.envs.metaworld import MetaWorldEnv, metaworld_contexts  # noqa: E402
from torchrl_ript.envs.metaworld_demos import metaworld_key_map, record_metaworld_demos  # noqa: E402
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

IMAGE_KEYS = (("observation", "image"), ("observation", "wrist_image"))


def demo_files(cfg, out: Path) -> list[Path]:
    folder = Path(cfg.demos.dir) if cfg.demos.dir else out / "demos"
    paths = []
    for task in cfg.tasks:
        path = folder / f"{task}_demo.hdf5"
        if not path.exists():
            record_metaworld_demos(
                task, cfg.demos.per_task, out=folder, noise=cfg.demos.noise, seed=cfg.demos.seed,
                camera_names=tuple(cfg.env.cameras), image_size=cfg.env.image_size,
                max_steps=cfg.env.max_steps, progress=cfg.progress,
            )
        paths.append(path)
    return paths


def train_contexts(cfg, paths):
    if cfg.contexts.source == "sampled":
        return metaworld_contexts(list(cfg.tasks), cfg.contexts.per_task, seed=cfg.contexts.seed)
    if cfg.contexts.source == "demos":
        from torchrl_ript.data.context import ContextDataset

        contexts = ContextDataset.from_demonstrations(paths, seed=cfg.contexts.seed)
        if contexts.task_names != list(cfg.tasks):
            raise ValueError(f"demo files hold tasks {contexts.task_names}, expected {list(cfg.tasks)}.")
        return contexts
    raise ValueError(f"contexts.source must be 'sampled' or 'demos', got {cfg.contexts.source!r}.")


def first_per_task(contexts, n):
    index = torch.cat([contexts.task_contexts(t)[:n] for t in range(contexts.num_tasks)])
    return contexts.subset(index)


@hydra.main(config_path="configs", config_name="ript_metaworld", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    distributed = init_distributed()  # None unless started by torchrun
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if distributed is not None and not distributed.is_main:  # its own demos/SFT files; rank 0 checkpoints
        out = out / f"rank{distributed.rank}"
    set_num_threads(cfg.threads)
    modes = exploration_modes(cfg.eval.exploration)  # a bad name fails before any work
    torch.manual_seed(cfg.ript.seed)
    paths = demo_files(cfg, out)
    image_keys = IMAGE_KEYS[: len(cfg.env.cameras)]
    bundle, sft_info = load_or_train_policy(
        cfg.policy.checkpoint,
        build=dict(kind=cfg.policy.kind, preset=cfg.policy.preset, action_dim=4, state_dim=4,
                   image_keys=image_keys, image_size=cfg.env.image_size,
                   overrides=OmegaConf.to_container(cfg.policy.overrides),
                   encoder_overrides=OmegaConf.to_container(cfg.policy.encoder)),
        files_fn=lambda: [read_demos(p, key_map=metaworld_key_map(tuple(cfg.env.cameras))) for p in paths],
        sft_options=sft_options(cfg.sft, seed=cfg.ript.seed),
        save_to=out / "sft_policy.pt",
        # top-k/temperature are token-policy options; the regression policy samples its Laplace
        sampling=OmegaConf.to_container(cfg.policy.sampling) if cfg.policy.kind == "quest" else None,
        progress=cfg.progress,
    )
    config = ript_config(OmegaConf.to_container(cfg.ript, resolve=True), bundle, max_env_steps=cfg.env.max_steps)
    env_fn = partial(MetaWorldEnv, task_names=list(cfg.tasks), camera_names=tuple(cfg.env.cameras),
                     image_size=cfg.env.image_size, max_steps=cfg.env.max_steps,
                     action_chunk=bundle.n_exec, render_quality="fast")
    eval_env = make_batched_env(env_fn, cfg.env.num_envs)
    held_out = metaworld_contexts(list(cfg.tasks), cfg.eval.per_task, seed=cfg.eval.seed)

    def full_eval(tag):
        result = evaluate_modes(eval_env, bundle.policy, held_out, horizon=config.max_decisions,
                                modes=modes, record_videos=cfg.eval.videos, progress=cfg.progress)
        for i, frames in enumerate(result.pop("videos")):
            save_video(frames, out / "videos" / f"{tag}_{i}.gif")
        for mode, scores in result["by_mode"].items():
            print(f"[{tag}] held-out SR ({mode}) {scores['sr']:.3f} per task {scores['per_task']}", flush=True)
        return result

    # a rerun from the same checkpoint may skip the SFT evaluation
    none = {"success_rate": None, "per_task": None, "by_mode": None}
    sft_eval = full_eval("sft") if cfg.stages.eval_sft else none
    result = {"tasks": list(cfg.tasks), "policy": bundle.kind, "eval_modes": modes,
              "sr_sft": sft_eval["success_rate"], "sr_sft_per_task": sft_eval["per_task"],
              "sr_sft_by_mode": sft_eval["by_mode"], "sft_s": sft_info["sft_s"]}
    trainer = None
    if cfg.stages.ript:
        contexts = train_contexts(cfg, paths)
        # collector.backend=ray, or this rank's share under torchrun (None: the local default)
        collector = make_collector(config, cfg.collector, env_fn=env_fn, policy=bundle.policy,
                                   train_contexts=contexts, sampled_action_key=bundle.sampled_key,
                                   distributed=distributed)
        trainer = make_ript_trainer(
            config, env=make_batched_env(env_fn, config.num_envs) if collector is None else None,
            collector=collector, distributed=distributed, eval_env=eval_env,
            actor=bundle.actor, policy=bundle.policy, sampled_action_key=bundle.sampled_key,
            train_contexts=contexts,
            eval_contexts=first_per_task(held_out, cfg.eval.during_training_per_task),
            logger=make_logger(cfg.logger.kind, out / "logs", "ript_metaworld"),
            checkpoint_dir=out / "checkpoints", eval_exploration_type=EXPLORATION_MODES[modes[0]],
            progress=cfg.progress,
        )
        trainer.resume(out / "checkpoints" / "latest.pt")
        trainer.train()
        trainer.collector.shutdown()
        save_policy(bundle.network, out / "ript_policy.pt", extra={"ript_steps": trainer.step})
        final = full_eval("ript")
        plot_success_rate(trainer.eval_history, trainer.history, out / "success_rate.png",
                          title=f"RIPT on MetaWorld ({', '.join(cfg.tasks)})",
                          baseline=sft_eval["by_mode"] and {m: r["sr"] for m, r in sft_eval["by_mode"].items()},
                          eval_label=f"held-out SR ({modes[0]}, {cfg.eval.during_training_per_task}/task)",
                          final={f"{m}, {cfg.eval.per_task}/task": r["sr"] for m, r in final["by_mode"].items()})
        result.update(sr_ript=final["success_rate"], sr_ript_per_task=final["per_task"],
                      sr_ript_by_mode=final["by_mode"], iterations=trainer.step, env_steps=trainer.env_steps)
    else:
        result.update(sr_ript=None, iterations=0, env_steps=0)
    eval_env.close()
    result.update(wall_s=time.perf_counter() - start, output_dir=str(out),
                  config=OmegaConf.to_container(cfg, resolve=True))
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
