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
from types import SimpleNamespace

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
from torchrl_ript.trainers import exploration_modes  # noqa: E402
from torchrl_ript.trainers.ddp import init_distributed  # noqa: E402
from torchrl_ript.trainers.factory import make_batched_env  # noqa: E402
from torchrl_ript.trainers.pipeline import (  # noqa: E402
    context_sampler,
    evaluate_stage,
    files_from_main_rank,
    load_or_pretrain,
    load_or_train_policy,
    plot_stage,
    policy_sampling,
    print_result_line,
    rank_output_dir,
    result_line,
    ript_config,
    ript_stage,
    set_num_threads,
    sft_options,
)

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
    sampler = context_sampler(c, group_size=group_size)
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


def prepare(cfg, out: Path, distributed=None) -> SimpleNamespace:
    """Everything before the evaluations and RIPT: seed, [pretrain ->] demos -> SFT (or
    ``policy.checkpoint``), the RIPT config, the env factory and the held-out starts.

    ``main``, ``benchmarks/signal_audit.py`` and ``benchmarks/per_start_success.py``
    all start here, so they run on exactly the policy, config, envs and starts this
    example builds.
    """
    main_rank = distributed is None or distributed.is_main
    torch.manual_seed(cfg.ript.seed)
    build = policy_build(cfg, IMAGE_KEYS[: len(cfg.env.cameras)])
    # under torchrun rank 0 pretrains, records the demos and runs SFT; the other ranks get its files
    skip_pretrain = cfg.policy.checkpoint or not main_rank
    pretrained, pretrain_info = (None, {}) if skip_pretrain else pretrain_stage(cfg, out, build)
    demo_folder = Path(cfg.demos.dir) if cfg.demos.dir else out / "demos"
    paths = files_from_main_rank(lambda: demo_paths(cfg, cfg.tasks, cfg.demos.per_task, demo_folder),
                                 distributed=distributed, folder=out / "demos")
    bundle, sft_info = load_or_train_policy(
        cfg.policy.checkpoint, build=build, start_from=pretrained,
        files_fn=lambda: read_files(cfg, paths),
        sft_options=sft_options(cfg.sft, seed=cfg.ript.seed),
        save_to=out / "sft_policy.pt",
        # top-k/temperature are token-policy options; the regression policy samples its Laplace
        sampling=policy_sampling(cfg.policy.kind, OmegaConf.to_container(cfg.policy.sampling)),
        distributed=distributed, progress=cfg.progress,
    )
    set_num_threads(cfg.threads)  # SFT used every core; rollouts leave them to the env workers
    config = ript_config(OmegaConf.to_container(cfg.ript, resolve=True), bundle, max_env_steps=cfg.env.max_steps)
    env_fn = partial(MetaWorldEnv, task_names=list(cfg.tasks), camera_names=tuple(cfg.env.cameras),
                     image_size=cfg.env.image_size, max_steps=cfg.env.max_steps,
                     action_chunk=bundle.n_exec, render_quality="fast")
    return SimpleNamespace(bundle=bundle, config=config, env_fn=env_fn, paths=paths,
                           held_out=held_out_contexts(cfg, paths), pretrain_info=pretrain_info, sft_info=sft_info)


def ript_inputs(cfg, prep: SimpleNamespace) -> dict:
    """:func:`ript_stage`'s policy, env and context arguments (shared with the signal audit)."""
    config = prep.config
    return dict(bundle=prep.bundle, env_fn=prep.env_fn,
                make_env=lambda: make_batched_env(prep.env_fn, config.num_envs),
                train_contexts=train_contexts(cfg, prep.paths, config.group_size), collector_options=cfg.collector)


def make_eval_env(cfg, prep: SimpleNamespace):
    """The evaluations' env pool: ``eval.num_envs`` slots (shared with ``benchmarks/per_start_success.py``)."""
    return as_env_pool(make_batched_env(prep.env_fn, cfg.eval.num_envs))


@hydra.main(config_path="configs", config_name="ript_metaworld", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    distributed = init_distributed()  # None unless started by torchrun
    # rank 0 writes to the run folder; under torchrun the other ranks to rank<r>/ in it
    out = rank_output_dir(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir, distributed)
    modes = exploration_modes(cfg.eval.exploration)  # a bad name fails before any work
    prep = prepare(cfg, out, distributed)
    bundle, config = prep.bundle, prep.config
    eval_env = make_eval_env(cfg, prep)  # one pool for every evaluation
    held_out = prep.held_out
    evaluate = partial(evaluate_stage, eval_env, bundle, held_out, horizon=config.max_decisions, modes=modes,
                       videos=cfg.eval.videos, out=out, lockstep=config.lockstep, seed=cfg.eval.seed,
                       rollouts_per_start=cfg.eval.rollouts_per_start, progress=cfg.progress)

    # a rerun from the same checkpoint may skip the SFT evaluation
    sft_eval = evaluate(tag="sft") if cfg.stages.eval_sft else None
    trainer = final = None
    ript_fields = {}
    if cfg.stages.ript:
        inputs = ript_inputs(cfg, prep)
        contexts = inputs["train_contexts"]
        trainer, _ = ript_stage(
            config, **inputs, out=out, eval_env=eval_env,
            eval_contexts=first_per_task(held_out, cfg.eval.during_training_per_task), eval_mode=modes[0],
            eval_seed=cfg.eval.seed,
            distributed=distributed, logger_kind=cfg.logger.kind, log_name="ript_metaworld", progress=cfg.progress,
        )
        trainer.collector.shutdown()  # its own env pool: the evaluations have theirs
        final = evaluate(tag="ript", baseline=sft_eval)
        plot_stage(trainer, out / "success_rate.png", baseline=sft_eval, final=final, per_task=cfg.eval.per_task,
                   title=f"RIPT on MetaWorld ({', '.join(cfg.tasks)})",
                   eval_label=f"held-out SR ({modes[0]}, {cfg.eval.during_training_per_task}/task)")
        ript_fields = {"contexts": len(contexts), "sampler": contexts.sampler}
    eval_env.close(raise_if_closed=False)
    result = result_line(
        fields={"tasks": list(cfg.tasks), "pretrain_tasks": list(cfg.pretrain.tasks)}, policy=bundle.kind,
        modes=modes, n_eval=len(held_out), baseline=sft_eval, final=final, trainer=trainer,
        dynamic_sampling=config.dynamic_sampling,
        stage_fields={"pretrain_s": prep.pretrain_info.get("pretrain_s", 0.0), "sft_s": prep.sft_info["sft_s"]},
        ript_fields=ript_fields, wall_s=time.perf_counter() - start, output_dir=out,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
