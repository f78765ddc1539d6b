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
from pathlib import Path
from types import SimpleNamespace

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
from torchrl_ript.trainers import exploration_modes  # noqa: E402
from torchrl_ript.trainers.ddp import init_distributed  # noqa: E402
from torchrl_ript.trainers.factory import make_batched_env  # noqa: E402
from torchrl_ript.trainers.pipeline import (  # noqa: E402
    context_sampler,
    evaluate_stage,
    files_from_main_rank,
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


def train_contexts(cfg, paths, task_ids, group_size: int):
    c = cfg.contexts
    source = c.source
    if source == "auto":
        source = "demos" if cfg.demos.dir else "init_files"
    sampler = context_sampler(c, group_size=group_size)
    if source == "demos":
        if not paths:
            raise ValueError("contexts.source=demos needs demo files (demos.dir, or the scripted demos).")
        contexts = libero_contexts(cfg.suite, task_ids=task_ids, source="demos", demo_paths=paths,
                                   sampler=sampler, seed=c.seed)
    elif source == "init_files":
        every = libero_contexts(cfg.suite, task_ids=task_ids, source="init_files", sampler=sampler, seed=c.seed)
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
    print(f"[contexts] {len(contexts)} RIPT contexts from {source}, {contexts.sampler} sampler", flush=True)
    return contexts


def first_per_task(contexts, task_ids, n):
    return contexts.subset(torch.cat([contexts.task_contexts(t)[:n] for t in task_ids]))


def prepare(cfg, out: Path, distributed=None, *, start: float | None = None) -> SimpleNamespace:
    """Everything before the evaluations and RIPT: threads, seed, held-out contexts, demos ->
    SFT (or ``policy.checkpoint``), the RIPT config, the env factory and the env pool.

    ``main`` and ``benchmarks/signal_audit.py`` both start here, so the audit
    runs on exactly the policy, config and envs this example builds. ``start``
    (``time.perf_counter()`` of the run's start, default: now) times ``demos_s``.
    """
    start = time.perf_counter() if start is None else start
    set_num_threads(cfg.threads)
    torch.manual_seed(cfg.ript.seed)
    task_ids = [int(t) for t in cfg.task_ids]
    max_steps = cfg.env.max_steps or LIBERO_MAX_STEPS[cfg.suite]
    inits = libero_contexts(cfg.suite, task_ids=task_ids, source="init_files")
    num_inits = min(len(inits.task_contexts(t)) for t in task_ids)
    if not 0 < cfg.eval.per_task <= num_inits:
        raise ValueError(f"eval.per_task must be in [1, {num_inits}] (benchmark init states per task).")
    held_out = first_per_task(inits, task_ids, cfg.eval.per_task)
    sft_needed = not cfg.policy.checkpoint
    needed = sft_needed or cfg.contexts.source == "demos"
    if cfg.demos.dir:  # the user's files: every rank reads them
        paths = demo_files(cfg, out, task_ids, num_inits, needed=needed)
    else:  # recorded (under torchrun by rank 0 only, which SFTs; the other ranks get copies)
        paths = files_from_main_rank(lambda: demo_files(cfg, out, task_ids, num_inits, needed=needed),
                                     distributed=distributed, folder=out / "demos")
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
        sampling=policy_sampling(cfg.policy.kind, OmegaConf.to_container(cfg.policy.sampling)),
        distributed=distributed, progress=cfg.progress,
    )
    config = ript_config(OmegaConf.to_container(cfg.ript, resolve=True), bundle, max_env_steps=max_steps)
    env_fn = libero_env_fn(
        cfg.suite, task_ids, max_live_tasks=cfg.env.max_live_tasks, camera_size=cfg.env.camera_size,
        wrist_camera=cfg.env.wrist_camera, max_episode_steps=max_steps, action_chunk=bundle.n_exec,
        render_quality=cfg.env.render_quality,
    )
    # One pool for rollouts and evaluation: they never run at the same time.
    env = make_batched_env(env_fn, config.num_envs)
    return SimpleNamespace(task_ids=task_ids, held_out=held_out, paths=paths, sft_needed=sft_needed,
                           demos_s=demos_s, bundle=bundle, sft_info=sft_info, config=config, env_fn=env_fn, env=env)


def ript_inputs(cfg, prep: SimpleNamespace) -> dict:
    """:func:`ript_stage`'s policy, env and context arguments (shared with the signal audit)."""
    return dict(bundle=prep.bundle, env_fn=prep.env_fn, make_env=lambda: prep.env,
                train_contexts=train_contexts(cfg, prep.paths, prep.task_ids, prep.config.group_size),
                collector_options=cfg.collector)


@hydra.main(config_path="configs", config_name="ript_libero", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    distributed = init_distributed()  # None unless started by torchrun
    # rank 0 writes to the run folder; under torchrun the other ranks to rank<r>/ in it
    out = rank_output_dir(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir, distributed)
    modes = exploration_modes(cfg.eval.exploration)  # a bad name fails before any work
    prep = prepare(cfg, out, distributed, start=start)
    task_ids, held_out, bundle, config, env = prep.task_ids, prep.held_out, prep.bundle, prep.config, prep.env
    sft_needed, sft_info = prep.sft_needed, prep.sft_info

    def evaluate(tag, baseline=None):
        return evaluate_stage(env, bundle, held_out, tag=tag, horizon=config.max_decisions, modes=modes,
                              videos=cfg.eval.videos, out=out, baseline=baseline, lockstep=config.lockstep,
                              seed=cfg.eval.seed, rollouts_per_start=cfg.eval.rollouts_per_start,
                              progress=cfg.progress)

    eval_start = time.perf_counter()
    before = evaluate("before")
    stage_fields = {"sr_sft": before["success_rate"] if sft_needed else None, "demos_s": prep.demos_s,
                    "sft_s": sft_info["sft_s"], "eval_before_s": time.perf_counter() - eval_start}
    trainer = final = None
    ript_fields = {}
    if cfg.stages.ript:
        during = cfg.eval.during_training_per_task
        trainer, info = ript_stage(
            config, **ript_inputs(cfg, prep), out=out, eval_env=env if during else None,
            eval_contexts=first_per_task(held_out, task_ids, during) if during else None, eval_mode=modes[0],
            eval_seed=cfg.eval.seed,
            # same contexts: the "before" evaluation is the history's first point
            initial_eval={"success_rate": before["success_rate"], "step": 0,
                          **{f"sr/{k}": v for k, v in before["per_task"].items()}}
            if during >= cfg.eval.per_task else None,
            distributed=distributed, logger_kind=cfg.logger.kind, log_name="ript_libero", progress=cfg.progress,
        )
        eval_start = time.perf_counter()
        final = evaluate("ript", baseline=before)
        trainer.collector.shutdown()  # the default collector closes the env pool with it
        env.close(raise_if_closed=False)  # (with another collector the pool only evaluated)
        plot_stage(trainer, out / "success_rate.png", baseline=before, final=final, per_task=cfg.eval.per_task,
                   title=f"RIPT on {cfg.suite} tasks {task_ids}", eval_label=f"held-out SR ({modes[0]})")
        ript_fields = {"iterations_without_update": info["iterations_without_update"], "ript_s": info["ript_s"],
                       "eval_after_s": time.perf_counter() - eval_start}
    else:
        env.close()
    result = result_line(
        fields={"suite": cfg.suite, "task_ids": task_ids, "tasks": [held_out.task_names[t] for t in task_ids]},
        policy=bundle.kind, modes=modes, n_eval=len(held_out), baseline=before, final=final, trainer=trainer,
        dynamic_sampling=config.dynamic_sampling, baseline_name="before", paired_key="paired_by_mode",
        collection="groups", stage_fields=stage_fields, ript_fields=ript_fields,
        wall_s=time.perf_counter() - start, output_dir=out, config=OmegaConf.to_container(cfg, resolve=True),
    )
    print_result_line(result, out / "result.json")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
