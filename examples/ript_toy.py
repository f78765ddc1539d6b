"""RIPT on a toy env: the quickest end-to-end check of the core components.

    python examples/ript_toy.py                      # Laplace actor
    python examples/ript_toy.py policy.kind=tokens   # token actor
    python examples/ript_toy.py collector.backend=ray collector.num_workers=2   # Ray rollout workers
    torchrun --standalone --nproc_per_node=2 examples/ript_toy.py               # 2 DDP learners
"""
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_ript import ContextDataset, ContextToyVLAEnv
from torchrl_ript.config import RIPTConfig
from torchrl_ript.modules.toy_policies import toy_laplace_actor, toy_token_policy
from torchrl_ript.trainers.ddp import init_distributed
from torchrl_ript.trainers.factory import make_batched_env, make_collector, make_logger, make_ript_trainer
from torchrl_ript.trainers.plots import plot_success_rate


@hydra.main(config_path="configs", config_name="ript_toy", version_base=None)
def main(cfg: DictConfig) -> None:
    distributed = init_distributed()  # None unless started by torchrun
    is_main = distributed is None or distributed.is_main
    config = RIPTConfig.from_mapping(OmegaConf.to_container(cfg.ript, resolve=True))
    torch.manual_seed(config.seed)
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    env_fn = partial(ContextToyVLAEnv, action_dim=cfg.env.action_dim, max_steps=cfg.env.max_steps,
                     success_tol=cfg.env.success_tol)
    g = torch.Generator().manual_seed(config.seed)
    contexts = ContextDataset(torch.rand(cfg.contexts.num_contexts, cfg.env.action_dim, generator=g) - 0.5,
                              [0] * cfg.contexts.num_contexts, ["track"], seed=config.seed)
    train, held_out = contexts.split(cfg.contexts.held_out, seed=config.seed)
    if cfg.policy.kind == "laplace":
        actor, _ = toy_laplace_actor(action_dim=cfg.env.action_dim, init_scale=cfg.policy.init_scale)
        policy, sampled = actor, "action"
    elif cfg.policy.kind == "tokens":
        actor, policy = toy_token_policy(action_dim=cfg.env.action_dim, bins=cfg.policy.bins)
        sampled = "action_tokens"
    else:
        raise ValueError(f"policy.kind must be 'laplace' or 'tokens', got {cfg.policy.kind!r}.")
    # collector.backend=ray, or under torchrun each rank's share of the batch (None: the default)
    collector = make_collector(config, cfg.collector, env_fn=env_fn, policy=policy, train_contexts=train,
                               sampled_action_key=sampled, parallel=cfg.env.parallel, distributed=distributed)
    trainer = make_ript_trainer(
        config,
        env=make_batched_env(env_fn, config.num_envs, parallel=cfg.env.parallel) if collector is None else None,
        collector=collector, distributed=distributed,
        eval_env=make_batched_env(env_fn, config.num_envs, parallel=cfg.env.parallel) if is_main else None,
        actor=actor, policy=policy, sampled_action_key=sampled,
        train_contexts=train, eval_contexts=held_out,
        logger=make_logger(cfg.logger.kind, out / "logs", "ript_toy") if is_main else None,
        checkpoint_dir=out / "checkpoints", progress=cfg.progress,
    )
    trainer.resume(out / "checkpoints" / "latest.pt")
    trainer.train()
    trainer.collector.shutdown()
    if is_main:
        plot_success_rate(trainer.eval_history, trainer.history, out / "success_rate.png",
                          title=f"RIPT on ToyVLAEnv ({cfg.policy.kind})")
        first, last = trainer.eval_history[0]["success_rate"], trainer.eval_history[-1]["success_rate"]
        print(f"held-out success rate: {first:.3f} -> {last:.3f}  (outputs in {out})")
    if distributed is not None:
        distributed.shutdown()


if __name__ == "__main__":
    main()
