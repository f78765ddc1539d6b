"""Save / load a policy as ``{kind, config, state_dict}`` (one ``torch.save`` file).

Reloading rebuilds the network from its config and loads the weights, so a
reloaded policy gives identical outputs. Configs are stored as plain dicts
(no pickled classes), loaded with ``weights_only=True``.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from torchrl_ript.models.regression_policy import RegressionConfig, RegressionPolicy
from torchrl_ript.models.quest import QuestConfig, QuestPolicy

__all__ = ["save_policy", "load_policy", "POLICY_KINDS"]

POLICY_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "quest": (QuestPolicy, QuestConfig),
    "regression": (RegressionPolicy, RegressionConfig),
}


def _is_hf(policy: nn.Module) -> bool:
    # imported lazily: transformers/peft are an optional extra
    cls = type(policy)
    return cls.__name__ == "HFVLAPolicy" and cls.__module__ == "torchrl_ript.models.hf_vla"


def _kind_of(policy: nn.Module) -> str:
    for kind, (cls, _) in POLICY_KINDS.items():
        if isinstance(policy, cls):
            return kind
    if _is_hf(policy):
        return "hf"
    raise TypeError(f"no checkpoint kind registered for {type(policy).__name__}.")


def save_policy(policy: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``policy``'s kind, config and weights (plus ``extra`` metadata).

    A Hugging Face VLA (kind ``"hf"``) stores only what training changes (LoRA
    adapters and heads) and the local folder of its frozen backbone
    (``config["pretrained"]``), which :func:`load_policy` reads again.
    """
    kind = _kind_of(policy)
    state = policy.trainable_state_dict() if kind == "hf" else policy.state_dict()
    payload = {
        "kind": kind,
        "config": policy.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "extra": extra or {},
    }
    torch.save(payload, path)


def load_policy(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Rebuild the policy saved by :func:`save_policy` (in ``eval`` mode)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload["kind"] == "hf":
        policy = _load_hf(payload)
    else:
        cls, config_cls = POLICY_KINDS[payload["kind"]]
        policy = cls(config_cls(**payload["config"]))
        policy.load_state_dict(payload["state_dict"])
    policy.to(map_location).eval()
    return (policy, payload["extra"]) if return_extra else policy


def _load_hf(payload: dict) -> nn.Module:
    from torchrl_ript.models.hf_vla import HFVLAConfig, HFVLAPolicy

    config = dict(payload["config"])
    folder = config.get("pretrained")
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(
            f"this hf policy checkpoint holds LoRA adapters and heads only; its backbone folder "
            f"{folder!r} is missing: copy the checkpoint folder there, or load it with "
            "HFVLAPolicy.from_pretrained(<folder>, HFVLAConfig(**payload['config'])) and "
            "load_trainable_state_dict(payload['state_dict'])."
        )
    for key in ("image_mean", "image_std"):
        config[key] = tuple(config[key])
    policy = HFVLAPolicy.from_pretrained(folder, HFVLAConfig(**config))
    policy.load_trainable_state_dict(payload["state_dict"])
    return policy
