"""Save / load a policy as ``{format, kind, config, state_dict, extra}`` (one ``torch.save`` file).

Reloading rebuilds the network of the registered kind
(:mod:`torchrl_ript.models.registry`) from its config and loads the
weights, so a reloaded policy gives identical outputs. Configs are stored as
plain dicts (no pickled classes), loaded with ``weights_only=True``. A file
that is not a readable policy file (truncated, corrupt, another program's)
raises :class:`CheckpointError` naming it.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from torchrl_ript.models.registry import config_dict, policy_kind, policy_kind_of, policy_kinds

__all__ = ["save_policy", "load_policy", "CheckpointError", "POLICY_FORMAT"]

POLICY_FORMAT = "torchrl_ript.policy/1"
# policy files written before the format marker: these keys, and no marker
_LEGACY_KEYS = frozenset({"kind", "config", "state_dict"})


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded: unreadable (truncated, corrupt), another
    program's file, or written for another model or configuration."""


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
        "format": POLICY_FORMAT,
        "kind": kind.name,
        "config": config_dict(policy.config),
        "state_dict": {k: v.detach().cpu() for k, v in kind.state_of(policy).items()},
        "extra": extra or {},
    }
    torch.save(payload, path)


def load_policy(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Rebuild the policy saved by :func:`save_policy` (in ``eval`` mode).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is not a readable policy file (truncated,
            corrupt, or written by something else), holds a kind that is not
            registered here, or a config / weights its kind cannot rebuild.
            Nothing is built before the file has been read and checked.
    """
    payload = _read_policy_file(path, map_location)
    try:
        kind = policy_kind(payload["kind"])
    except ValueError:
        raise CheckpointError(
            f"{path} holds a policy of kind {payload['kind']!r}, which is not registered here "
            f"(registered: {policy_kinds()}): import the module that registers it "
            "(torchrl_ript.models.register_policy_kind) before loading."
        ) from None
    try:
        policy = kind.rebuild(dict(payload["config"]), payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} holds a {kind.name!r} policy whose config or weights do not fit this version's "
            f"{kind.network_class.__name__} ({type(err).__name__}: {err})."
        ) from err
    policy.to(map_location).eval()
    return (policy, payload.get("extra", {})) if return_extra else policy


def _read_policy_file(path: str | os.PathLike, map_location) -> dict:
    """The checked payload of a policy file (:class:`CheckpointError` if it is none)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # missing file, a folder, no permission: not about the file's content
    except Exception as err:  # torch raises several types for broken zip/pickle data
        raise CheckpointError(
            f"cannot read policy file {path}: it is truncated, corrupt or not a save_policy file "
            f"({type(err).__name__}: {err}). Write it again (e.g. rerun SFT), or give another file."
        ) from err
    if not isinstance(payload, dict) or not (
        payload.get("format") == POLICY_FORMAT or ("format" not in payload and _LEGACY_KEYS <= payload.keys())
    ):
        raise CheckpointError(
            f"{path} is not a policy file (no {POLICY_FORMAT!r} marker): it was written by something "
            "else (e.g. RIPTTrainer writes checkpoints/latest.pt, resumed with RIPTTrainer.resume); "
            "policy files are written by torchrl_ript.models.save_policy (sft_policy.pt, ript_policy.pt)."
        )
    return payload
