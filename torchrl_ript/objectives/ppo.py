"""RIPT's PPO objective: TorchRL's ClipPPOLoss on trajectory log-probs (Eq. 8)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tensordict import NonTensorStack, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import ClipPPOLoss

from torchrl_ript.data.instructions import instruction_strings

__all__ = ["RIPTClipPPOLoss"]

_RATIOS = ("trajectory", "step")


class RIPTClipPPOLoss(ClipPPOLoss):
    """Critic-free clipped PPO over whole trajectories, as RIPT-VLA uses it.

    TorchRL's :class:`~torchrl.objectives.ClipPPOLoss` scores one action per
    row. A RIPT row is a whole trajectory (see
    :class:`~torchrl_ript.collectors.GroupCollector`): its decisions sit in a
    padded ``("steps", ...)`` sub-tensordict ``[N, T]`` with a mask. This
    subclass only changes how the current log-prob is computed: it runs the
    actor once on the *valid* decisions of the batch (flattened, padding
    skipped) and sums them per trajectory,
    ``log pi(a|c) = sum_t log pi(a_t|...)`` (Eq. 8). Everything else, the
    ratio, clipping, advantage contract and logging, is ``ClipPPOLoss``.

    The advantage contract is ``ClipPPOLoss``'s: one value per trajectory,
    shaped ``[N, 1]`` (what :class:`~torchrl_ript.transforms.RLOOAdvantage`
    writes); a flat ``[N]`` advantage raises.

    Args:
        actor_network: the ``ProbabilisticActor`` whose distribution is scored.

    Keyword Args:
        clip_epsilon (float): PPO clip. Defaults to ``0.2`` (QueST; OFT uses 0.1).
        ratio (str): ``"trajectory"`` (default): one ratio per trajectory from
            the summed log-probs. ``"step"``: one ratio per decision, each
            weighted by its trajectory's advantage; padded decisions have a
            ratio of exactly 1 and carry no gradient (the loss is averaged over
            all ``N * T`` slots).
        **kwargs: any other ``ClipPPOLoss`` option (e.g. ``normalize_advantage``).
            ``critic_network`` must stay ``None`` and ``entropy_bonus`` ``False``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_ript.modules import make_continuous_actor
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mean = torch.nn.Linear(3, 2)
        ...     def forward(self, obs):
        ...         return self.mean(obs), torch.ones(*obs.shape[:-1], 2)
        >>> actor = make_continuous_actor(Net(), in_keys=["obs"], event_dims=1)
        >>> steps = TensorDict(obs=torch.randn(2, 4, 3), action=torch.randn(2, 4, 2),
        ...                    mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool(),
        ...                    batch_size=[2, 4])
        >>> with torch.no_grad():
        ...     old = actor.get_dist(steps).log_prob(steps["action"]) * steps["mask"]
        >>> batch = TensorDict(steps=steps, action_log_prob=old.sum(-1),
        ...                    advantage=torch.tensor([[1.0], [-1.0]]), batch_size=[2])
        >>> loss = RIPTClipPPOLoss(actor)
        >>> out = loss(batch)
        >>> out["loss_objective"].requires_grad, float(out["mean_ratio"])
        (True, 1.0)
    """

    @dataclass
    class _AcceptedKeys(ClipPPOLoss._AcceptedKeys):
        """Keys of :class:`RIPTClipPPOLoss` (``ClipPPOLoss``'s plus these).

        Attributes:
            steps: the per-decision sub-tensordict ``[N, T]``.
            mask: inside ``steps``, the bool mask of real decisions.
            instruction: the per-trajectory instruction, broadcast to the
                decisions when the actor reads it.
        """

        steps: NestedKey = "steps"
        mask: NestedKey = "mask"
        instruction: NestedKey = "language_instruction"

    default_keys = _AcceptedKeys

    def __init__(
        self,
        actor_network,
        *,
        clip_epsilon: float = 0.2,
        ratio: str = "trajectory",
        **kwargs,
    ) -> None:
        if ratio not in _RATIOS:
            raise ValueError(f"ratio must be one of {_RATIOS}, got {ratio!r}.")
        if kwargs.get("critic_network") is not None:
            raise ValueError("RIPT is critic-free: leave critic_network=None.")
        if kwargs.get("entropy_bonus"):
            raise ValueError(
                "entropy_bonus is not supported on trajectory rows (the paper uses "
                "none); leave entropy_bonus=False."
            )
        kwargs.pop("critic_network", None)
        kwargs.pop("entropy_bonus", None)
        kwargs.setdefault("normalize_advantage", False)
        super().__init__(
            actor_network,
            critic_network=None,
            entropy_bonus=False,
            clip_epsilon=clip_epsilon,
            **kwargs,
        )
        self.ratio = ratio
        self._support_exits = torch.zeros(())
        self.set_keys(action="action", sample_log_prob="action_log_prob")
        if ratio == "step":
            self.set_keys(sample_log_prob=(self.tensor_keys.steps, "action_log_prob"))

    def _log_weight(self, tensordict: TensorDictBase, adv_shape):
        log_weight, dist, kl_approx, log_is_weight = super()._log_weight(tensordict, adv_shape)
        # Top-k sampling: a stored token that has left the current top-k scores -inf, so
        # its ratio is 0 and it carries no gradient (exact for that distribution). Keep
        # the logged KL finite (the mean over the others) and count those separately.
        exited = torch.isinf(kl_approx)
        self._support_exits = exited.to(kl_approx.dtype).mean().detach()
        if exited.any():
            finite = kl_approx[~exited]
            fill = finite.mean() if finite.numel() else kl_approx.new_zeros(())
            kl_approx = torch.where(exited, fill, kl_approx)
        return log_weight, dist, kl_approx, log_is_weight

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``ClipPPOLoss.forward``, plus ``support_exit_fraction``: the share of
        ratios whose sampled action now has probability 0 (top-k sampling)."""
        out = super().forward(tensordict)
        out.set("support_exit_fraction", self._support_exits)
        return out

    def _get_cur_log_prob(self, tensordict: TensorDictBase, params=None):
        keys = self.tensor_keys
        steps = tensordict.get(keys.steps, None)
        if steps is None:
            raise KeyError(
                f"no {keys.steps!r} sub-tensordict: RIPTClipPPOLoss expects "
                "trajectory rows from GroupCollector (set_keys(steps=...) otherwise)."
            )
        mask = steps.get(keys.mask).to(torch.bool)
        rows, cols = mask.nonzero(as_tuple=True)
        flat = steps[mask]
        if keys.instruction in tensordict.keys(include_nested=True):
            texts = instruction_strings(tensordict, keys.instruction, tensordict.shape[0])
            flat.set(keys.instruction, NonTensorStack(*[texts[r] for r in rows.tolist()]))
        if params is None:
            params = self.actor_network_params
        with (
            params.to_module(self.actor_network, preserve_module_state=False)
            if self.functional
            else contextlib.nullcontext()
        ):
            dist = self.actor_network.get_dist(flat)
        action = flat.get(keys.action)
        if action.requires_grad:
            raise RuntimeError(f"tensordict stored {keys.action} requires grad.")
        step_log_prob = dist.log_prob(action)
        if self.ratio == "trajectory":
            log_prob = step_log_prob.new_zeros(mask.shape[0]).index_add(0, rows, step_log_prob)
        else:
            log_prob = step_log_prob.new_zeros(mask.shape)
            log_prob = log_prob.index_put((rows, cols), step_log_prob)
        return log_prob, dist, False


def __getattr__(name: str):
    # deprecated alias: the loss also does per-decision ratios (ratio="step")
    if name == "TrajectoryClipPPOLoss":
        import warnings

        warnings.warn(
            "TrajectoryClipPPOLoss is deprecated (it also computes per-decision "
            "ratios): use RIPTClipPPOLoss.",
            DeprecationWarning,
            stacklevel=2,
        )
        return RIPTClipPPOLoss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
