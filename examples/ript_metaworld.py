"""MetaWorld end to end: [pretrain ->] scripted demos -> SFT -> evaluate -> RIPT -> evaluate.

    python examples/ript_metaworld.py                                   # the default main job
    python examples/ript_metaworld.py collector.backend=ray collector.num_workers=2   # Ray rollout workers
    torchrun --standalone --nproc_per_node=2 examples/ript_metaworld.py               # 2 DDP learners
    python examples/ript_metaworld.py --config-name ript_metaworld_transfer pretrain.tasks='[push-v3]' tasks='[push-wall-v3]'
    python examples/ript_metaworld.py --config-name ript_metaworld_fewshot   # 5 tasks, 5 demos, no pretraining

With ``pretrain.tasks`` set, a policy is first trained on many scripted demos
of those source tasks (saved as ``pretrain_policy.pt``); the target SFT then
fine-tunes it on ``demos.per_task`` demos of each target task. RIPT starts its
rollouts from the SFT demos' first states (``contexts.source=demos``), or
from fresh starts (``sampled``). Every stage is skippable from a checkpoint.

Ends by printing one JSON line: tasks, sr_sft, sr_ript, n_eval, p_value,
iterations, env_steps, wall_s (and the collection statistics).
"""
import time
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_ript.envs.rendering import select_gl_backend

select_gl_backend()  # before anything imports MuJoCo rendering

from torchrl_ript.collectors.engine import as_env_pool  # noqa: E402
from torchrl_ript.data.context import ContextDataset  # noqa: E402
from torchrl_ript.data.demos import read_demos  # noqa: E402
from torchrl_ript.envs.metaworld import MetaWorldContextProjection, MetaWorldEnv, metaworld_contexts  # noqa: E402
from torchrl_ript.envs.metaworld_demos import ensure_metaworld_demos, metaworld_key_map  # noqa: E402
from torchrl_ript.models.checkpoint import save_policy  # noqa: E402
from torchrl_ript.trainers import EXPLORATION_MODES, evaluate_modes, exploration_modes, save_video  # noqa: E402
from torchrl_ript.trainers.ddp import init_distributed  # noqa: E402
from torchrl_ript.trainers.factory import make_batched_env, make_collector, make_logger, make_ript_trainer  # noqa: E402
from torchrl_ript.trainers.pipeline import (  # noqa: E402
    collection_summary,
    context_sampler,
    load_or_pretrain,
    load_or_train_policy,
    paired_results,
    print_result_line,
    ript_config,
    set_num_threads,
    sft_options,
)
from torchrl_ript.trainers.plots import plot_success_rate  # noqa: E402

IMAGE_KEYS = (("observation", "image"), ("observation", "wrist_image"))


def demo_paths(cfg, tasks, n, folder) -> list[Path]:
    return ensure_metaworld_demos(
        list(tasks), n, folder=folder, record=True, noise=cfg.demos.noise, seed=cfg.demos.seed,
        camera_names=tuple(cfg.env.cameras), image_size=cfg.env.image_size,
        max_steps=cfg.env.max_steps, progress=cfg.progress,
    )


def read_files(cfg, paths):
    return [read_demos(p, key_map=metaworld_key_map(tuple(cfg.env.cameras))) for p in paths]


def train_contexts(cfg, paths, group_size: int) -> ContextDataset:
    c = cfg.contexts
    sampler = context_sampler(c.sampler, group_size=group_size, explore=c.explore)
    kwargs = dict(sampler=sampler, noise_std=c.noise_std, project=MetaWorldContextProjection(list(cfg.tasks)),
                  seed=c.seed)
    if c.source == "sampled":
        return metaworld_contexts(list(cfg.tasks), c.per_task, **kwargs)
    if c.source == "demos":
        contexts = ContextDataset.from_demonstrations(paths, **kwargs)
        if contexts.task_names != list(cfg.tasks):
            raise ValueError(f"demo files hold tasks {contexts.task_names}, expected {list(cfg.tasks)}.")
        # fixed noisy variants around each demo's start: more starts to practise on (Fig. 6-7)
        return contexts.jitter(c.jitter.copies, c.jitter.std, seed=c.seed) if c.jitter.copies > 1 else contexts
    raise ValueError(f"contexts.source must be 'sampled' or 'demos', got {c.source!r}.")


def held_out_contexts(cfg, paths) -> ContextDataset:
    held_out = metaworld_contexts(list(cfg.tasks), cfg.eval.per_task, seed=cfg.eval.seed)
    seen = ContextDataset.from_demonstrations(paths)  # the starts SFT saw
    clash = held_out.matches(seen)
    if bool(clash.any()):
        raise ValueError(
            f"{int(clash.sum())} evaluation contexts equal demo starts: choose eval.seed != demos.seed."
        )
    return held_out


def first_per_task(contexts, n):
    index = torch.cat([contexts.task_contexts(t)[:n] for t in range(contexts.num_tasks)])
    return contexts.subset(index)


def policy_build(cfg, image_keys):
    return dict(kind=cfg.policy.kind, preset=cfg.policy.preset, action_dim=4, state_dim=4,
                image_keys=image_keys, image_size=cfg.env.image_size,
                overrides=OmegaConf.to_container(cfg.policy.overrides),
                encoder_overrides=OmegaConf.to_container(cfg.policy.encoder))


def pretrain_stage(cfg, out: Path, build) -> tuple:
    """Multitask SFT on the source tasks' demos (skipped without pretrain.tasks)."""
    p = cfg.pretrain
    if not p.tasks and not p.checkpoint:
        return None, {"pretrain_s": 0.0}
    folder = Path(p.demos_dir) if p.demos_dir else out / "pretrain_demos"
    return load_or_pretrain(
        p.checkpoint, build=build,
        files_fn=lambda: read_files(cfg, demo_paths(cfg, p.tasks, p.demos_per_task, folder)),
        sft_options=sft_options(p, seed=cfg.ript.seed), save_to=out / "pretrain_policy.pt",
        progress=cfg.progress,
    )


@hydra.main(config_path="configs", config_name="ript_metaworld", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    distributed = init_distributed()  # None unless started by torchrun
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if distributed is not None and not distributed.is_main:  # its own demos/SFT files; rank 0 checkpoints
        out = out / f"rank{distributed.rank}"
    modes = exploration_modes(cfg.eval.exploration)  # a bad name fails before any work
    torch.manual_seed(cfg.ript.seed)
    build = policy_build(cfg, IMAGE_KEYS[: len(cfg.env.cameras)])
    pretrained, pretrain_info = pretrain_stage(cfg, out, build) if not cfg.policy.checkpoint else (None, {})
    paths = demo_paths(cfg, cfg.tasks, cfg.demos.per_task, Path(cfg.demos.dir) if cfg.demos.dir else out / "demos")
    bundle, sft_info = load_or_train_policy(
        cfg.policy.checkpoint, build=build, start_from=pretrained,
        files_fn=lambda: read_files(cfg, paths),
        sft_options=sft_options(cfg.sft, seed=cfg.ript.seed),
        save_to=out / "sft_policy.pt",
        # top-k/temperature are token-policy options; the regression policy samples its Laplace
        sampling=OmegaConf.to_container(cfg.policy.sampling) if cfg.policy.kind == "quest" else None,
        progress=cfg.progress,
    )
    set_num_threads(cfg.threads)  # SFT used every core; rollouts leave them to the env workers
    config = ript_config(OmegaConf.to_container(cfg.ript, resolve=True), bundle, max_env_steps=cfg.env.max_steps)
    env_fn = partial(MetaWorldEnv, task_names=list(cfg.tasks), camera_names=tuple(cfg.env.cameras),
                     image_size=cfg.env.image_size, max_steps=cfg.env.max_steps,
                     action_chunk=bundle.n_exec, render_quality="fast")
    eval_env = as_env_pool(make_batched_env(env_fn, cfg.env.num_envs))  # one pool for every evaluation
    held_out = held_out_contexts(cfg, paths)

    def full_eval(tag):
        result = evaluate_modes(eval_env, bundle.policy, held_out, horizon=config.max_decisions,
                                modes=modes, record_videos=cfg.eval.videos, progress=cfg.progress)
        for i, frames in enumerate(result.pop("videos")):
            save_video(frames, out / "videos" / f"{tag}_{i}.gif")
        for mode, scores in result["by_mode"].items():
            print(f"[{tag}] held-out SR ({mode}) {scores['sr']:.3f} over {scores['n']} rollouts, "
                  f"per task {scores['per_task']}", flush=True)
        return result

    # a rerun from the same checkpoint may skip the SFT evaluation
    none = {"success_rate": None, "per_task": None, "by_mode": None}
    sft_eval = full_eval("sft") if cfg.stages.eval_sft else none
    result = {"tasks": list(cfg.tasks), "pretrain_tasks": list(cfg.pretrain.tasks), "policy": bundle.kind,
              "eval_modes": modes, "sr_sft": sft_eval["success_rate"], "sr_sft_per_task": sft_eval["per_task"],
              "sr_sft_by_mode": sft_eval["by_mode"], "n_eval": len(held_out),
              "pretrain_s": pretrain_info.get("pretrain_s", 0.0), "sft_s": sft_info["sft_s"]}
    trainer = None
    if cfg.stages.ript:
        contexts = train_contexts(cfg, paths, config.group_size)
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
                      sr_ript_by_mode=final["by_mode"], iterations=trainer.step, env_steps=trainer.env_steps,
                      contexts=len(contexts), sampler=contexts.sampler,
                      collection=collection_summary(trainer.history, dynamic_sampling=config.dynamic_sampling))
        result.update(paired_results(sft_eval["by_mode"], final["by_mode"], modes))
    else:
        result.update(sr_ript=None, iterations=0, env_steps=0, p_value=None)
    eval_env.close(raise_if_closed=False)
    result.update(wall_s=time.perf_counter() - start, output_dir=str(out),
                  config=OmegaConf.to_container(cfg, resolve=True))
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
