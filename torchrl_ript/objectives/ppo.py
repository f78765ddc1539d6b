"""RIPT's PPO objective: TorchRL's ClipPPOLoss on trajectory log-probs (Eq. 8) or per decision."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tensordict import NonTensorStack, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import ClipPPOLoss

from torchrl_ript.data.instructions import instruction_strings
from torchrl_ript.modules.actors import score_per_action

__all__ = ["RIPTClipPPOLoss"]

_RATIOS = ("trajectory", "step", "action")
_REDUCTIONS = ("decision", "trajectory")


class RIPTClipPPOLoss(ClipPPOLoss):
    """Critic-free clipped PPO on grouped RIPT trajectories (TorchRL's ``ClipPPOLoss``).

    TorchRL's :class:`~torchrl.objectives.ClipPPOLoss` scores one action per
    row. A RIPT row is a whole trajectory (see
    :class:`~torchrl_ript.collectors.GroupCollector`): its decisions sit in a
    padded ``("steps", ...)`` sub-tensordict ``[N, T]`` with a mask. Two
    ratios are offered, both computed by ``ClipPPOLoss.forward`` itself:

    - ``ratio="trajectory"`` (Eq. 8, the paper's): one ratio per trajectory,
      ``log pi(a|c) = sum_t log pi(a_t|...)``. Only the log-prob hook
      (``_get_cur_log_prob``, the extension point ``ClipPPOLoss`` documents)
      is replaced: it runs the actor once on the *valid* decisions of the
      minibatch (padding skipped) and sums them per trajectory.
    - ``ratio="step"``: one ratio per decision. The minibatch is flattened to
      its valid decisions (``[M]`` rows, each with its trajectory's
      advantage) before ``ClipPPOLoss.forward`` runs, so the objective and
      every statistic it logs (``clip_fraction``, ``kl_approx``, ``ESS``,
      ``mean_ratio``, ``max_ratio``) are means over real decisions: padding
      never enters.
    - ``ratio="action"`` (continuous chunk actors): one ratio per action of
      each decision's ``[chunk, A]`` chunk, its log-prob summed over the ``A``
      action dims only, so a ratio sums ``A`` Laplace/Gaussian terms instead
      of ``chunk * A``. The loss switches its actor to per-action scoring
      (:func:`~torchrl_ript.modules.score_per_action`, in place: the
      collector running the same actor then records ``[chunk]`` log-probs
      per decision) and runs as ``"step"``: ``ClipPPOLoss`` broadcasts each
      decision's advantage over its actions (its per-token path), and the
      statistics are means over actions.

    The advantage contract is ``ClipPPOLoss``'s: one value per trajectory,
    shaped ``[N, 1]`` (what :class:`~torchrl_ript.transforms.RLOOAdvantage`
    writes); a flat ``[N]`` advantage raises.

    ``loss_reduction`` (``ratio="step"``): ``"decision"`` averages the
    clipped objective over the minibatch's decisions, so a trajectory weighs
    as many decisions as it has (failures that run to the time limit weigh
    2-2.5x more than quick successes); ``"trajectory"`` averages over each
    trajectory's decisions, then over trajectories (every rollout weighs
    the same, as with the trajectory ratio). The statistics stay means over
    decisions.

    Besides ``ClipPPOLoss``'s statistics it writes ``kl_k3``, the
    non-negative per-decision KL estimate ``mean(r - 1 - log r)`` of the
    current policy from the collecting one (``kl_approx`` is the k1
    estimate ``mean(-log r)``, which can be negative).

    Top-k sampling: a stored token that has left the current top-k has
    probability 0, so its ratio is 0 and it carries no gradient (exact for
    that distribution). ``kl_approx`` is then reported as the mean over the
    other ratios (it would be ``inf``) and ``support_exit_fraction`` counts
    those ratios.

    Args:
        actor_network: the ``ProbabilisticActor`` whose distribution is scored.

    Keyword Args:
        clip_epsilon (float): PPO clip. Defaults to ``0.2`` (QueST; OFT uses 0.1).
        ratio (str): ``"trajectory"`` (default), ``"step"`` or ``"action"`` (see above).
        loss_reduction (str): ``"decision"`` (default) or ``"trajectory"``
            (see above; the trajectory ratio is always a mean over trajectories).
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
        ...     steps["action_log_prob"] = actor.get_dist(steps).log_prob(steps["action"]) * steps["mask"]
        >>> batch = TensorDict(steps=steps, action_log_prob=steps["action_log_prob"].sum(-1),
        ...                    advantage=torch.tensor([[1.0], [-1.0]]), batch_size=[2])
        >>> out = RIPTClipPPOLoss(actor)(batch)
        >>> out["loss_objective"].requires_grad, float(out["mean_ratio"])
        (True, 1.0)
        >>> # per-decision ratios: statistics over the 5 real decisions only
        >>> batch["steps", "action_log_prob"] -= 1.0  # every real decision's ratio is e
        >>> out = RIPTClipPPOLoss(actor, ratio="step")(batch)
        >>> float(out["clip_fraction"]), round(float(out["mean_ratio"]), 4)
        (1.0, 2.7183)
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
        loss_reduction: str = "decision",
        **kwargs,
    ) -> None:
        if ratio not in _RATIOS:
            raise ValueError(f"ratio must be one of {_RATIOS}, got {ratio!r}.")
        if loss_reduction not in _REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {_REDUCTIONS}, got {loss_reduction!r}.")
        if ratio == "action":
            score_per_action(actor_network)
        per_trajectory = ratio in ("step", "action") and loss_reduction == "trajectory"
        if per_trajectory:
            if kwargs.get("reduction") not in (None, "none"):
                raise ValueError("loss_reduction='trajectory' reduces the objective itself: leave reduction unset.")
            kwargs["reduction"] = "none"  # per-decision objectives, weighted in forward
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
        self.loss_reduction = loss_reduction
        self._per_trajectory = per_trajectory
        self._last_log_prob: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None
        self.set_keys(action="action", sample_log_prob="action_log_prob")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``ClipPPOLoss.forward`` on trajectories (``ratio="trajectory"``) or on the
        minibatch's valid decisions (``ratio="step"``); adds ``support_exit_fraction``."""
        data = self._decisions(tensordict) if self.ratio != "trajectory" else tensordict
        if self.ratio == "action":
            stored = data.get(self.tensor_keys.sample_log_prob)
            if stored.ndim < 2:
                raise ValueError(
                    f"ratio='action' needs one collected log-prob per action ([decisions, chunk]), got "
                    f"{tuple(stored.shape)}: collect with the actor this loss scores (it switched it to "
                    "per-action scoring), or build Ray workers after the loss (make_collector does)."
                )
        self._last_log_prob = None
        out = super().forward(data)
        if self._per_trajectory:  # each trajectory's decisions share one unit of weight
            rows = self._rows
            per_decision = out.get("loss_objective").reshape(rows.shape[0], -1).mean(-1)
            length = torch.bincount(rows)[rows].to(per_decision.dtype)
            out.set("loss_objective", (per_decision / length).sum() / rows.unique().numel())
        current = self._last_log_prob
        if current is not None:
            stored = data.get(self.tensor_keys.sample_log_prob).reshape(current.shape)
            exited = torch.isneginf(current)
            kl = stored - current
            finite = kl[~exited]
            zero = kl.new_zeros(())
            out.set("kl_approx", finite.mean() if finite.numel() else zero)
            # k3 = r - 1 - log r with log r = -kl: >= 0, unbiased for KL(old || new)
            out.set("kl_k3", (torch.expm1(-finite) + finite).mean() if finite.numel() else zero)
            out.set("support_exit_fraction", exited.to(kl.dtype).mean())
        return out

    def _decisions(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The valid decisions ``[M]`` of trajectory rows, each with its row's advantage."""
        keys = self.tensor_keys
        steps = self._steps(tensordict)
        mask = steps.get(keys.mask).to(torch.bool)
        rows = mask.nonzero(as_tuple=True)[0]
        self._rows = rows
        flat = steps[mask]
        advantage = tensordict.get(keys.advantage, None)
        if advantage is not None:
            if advantage.shape != (tensordict.shape[0], 1):
                raise ValueError(
                    f"{keys.advantage!r} must have a trailing dim of 1 ([N, 1], one value per "
                    f"trajectory), got shape {tuple(advantage.shape)}."
                )
            flat.set(keys.advantage, advantage[rows])
        self._set_instructions(tensordict, flat, rows)
        return flat

    def _steps(self, tensordict: TensorDictBase) -> TensorDictBase:
        steps = tensordict.get(self.tensor_keys.steps, None)
        if steps is None:
            raise KeyError(
                f"no {self.tensor_keys.steps!r} sub-tensordict: RIPTClipPPOLoss expects "
                "trajectory rows from GroupCollector (set_keys(steps=...) otherwise)."
            )
        return steps

    def _set_instructions(self, tensordict, flat, rows) -> None:
        key = self.tensor_keys.instruction
        if key in tensordict.keys(include_nested=True):
            texts = instruction_strings(tensordict, key, tensordict.shape[0])
            flat.set(key, NonTensorStack(*[texts[r] for r in rows.tolist()]))

    def _get_cur_log_prob(self, tensordict: TensorDictBase, *args, **kwargs):
        # ClipPPOLoss's documented hook. Its return value, ``(log_prob, dist,
        # is_composite)``, is what torchrl>=0.14.1 expects (0.14.0 differs: the
        # pin in pyproject.toml). The extra arguments are forwarded untouched:
        # 0.14.x passes ``params=`` (the target weights of a delayed actor),
        # newer TorchRL calls the hook with the tensordict alone.
        if self.ratio != "trajectory":  # already flat decisions: ClipPPOLoss's own scoring
            log_prob, dist, composite = super()._get_cur_log_prob(tensordict, *args, **kwargs)
            self._last_log_prob = log_prob.detach()
            return log_prob, dist, composite
        params = kwargs.get("params", args[0] if args else None)
        keys = self.tensor_keys
        steps = self._steps(tensordict)
        mask = steps.get(keys.mask).to(torch.bool)
        rows = mask.nonzero(as_tuple=True)[0]
        flat = steps[mask]
        self._set_instructions(tensordict, flat, rows)
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
        log_prob = step_log_prob.new_zeros(mask.shape[0]).index_add(0, rows, step_log_prob)
        self._last_log_prob = log_prob.detach()
        return log_prob, dist, False
