"""Save / load a policy as ``{kind, config, state_dict, extra}`` (one ``torch.save`` file).

Reloading rebuilds the network of the registered kind
(:mod:`torchrl_ript.models.registry`) from its config and loads the
weights, so a reloaded policy gives identical outputs. Configs are stored as
plain dicts (no pickled classes), loaded with ``weights_only=True``.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from torchrl_ript.models.registry import config_dict, policy_kind, policy_kind_of

__all__ = ["save_policy", "load_policy"]


def save_policy(policy: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``policy``'s kind, config and weights (plus ``extra`` metadata).

    What is stored of the weights is the kind's choice
    (:attr:`~torchrl_ript.models.registry.PolicyKind.checkpoint_state`): a
    Hugging Face VLA (kind ``"hf"``) stores only what training changes (LoRA
    adapters and heads) and the local folder of its frozen backbone
    (``config["pretrained"]``), which :func:`load_policy` reads again.

    Examples:
        >>> import tempfile, os
        >>> from torchrl_ript.models.regression_policy import RegressionPolicy, regression_config
        >>> path = os.path.join(tempfile.mkdtemp(), "policy.pt")
        >>> save_policy(RegressionPolicy(regression_config("tiny")), path, extra={"note": "sft"})
        >>> policy, extra = load_policy(path, return_extra=True)
        >>> type(policy).__name__, extra
        ('RegressionPolicy', {'note': 'sft'})
    """
    kind = policy_kind_of(policy)
    payload = {
        "kind": kind.name,
        "config": config_dict(policy.config),
        "state_dict": {k: v.detach().cpu() for k, v in kind.state_of(policy).items()},
        "extra": extra or {},
    }
    torch.save(payload, path)


def load_policy(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Rebuild the policy saved by :func:`save_policy` (in ``eval`` mode)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    policy = policy_kind(payload["kind"]).rebuild(dict(payload["config"]), payload["state_dict"])
    policy.to(map_location).eval()
    return (policy, payload["extra"]) if return_extra else policy
