"""Signal audit: does one RIPT update follow the reward, or the noise?

One collected batch, the configured PPO update run twice from the same
weights and a fresh optimizer state: once with the real leave-one-out
advantages, once with the same magnitudes under random signs per trajectory
(the *null* update: a reward that says nothing). After each, the new
policy's log-probability of every collected decision is recomputed through
the loss's own path and compared with the collected one:

* ``out_of_band``: share of decisions whose ratio ``r = pi_new / pi_old``
  left the clip band ``[1 - eps, 1 + eps]``;
* ``k1 = mean(log pi_old - log pi_new)`` and ``k3 = mean(r - 1 - log r)``:
  two estimators of KL(pi_old || pi_new) per decision (k3 is >= 0 per
  decision, lower variance; k1 can be negative);
* for continuous policies (Laplace / Gaussian chunks) the scale of each action
  dimension and each dimension's share of the log-ratio variance.

How to read it (``benchmarks/README.md``, "Signal audit"): the null update
must stay mostly inside the clip band (``out_of_band_null <= 0.10``); one that
already leaves it moves the policy as far on noise as on the reward, so the
run measures noise. :func:`ratio_statistics` and
:func:`log_ratio_variance_shares` are the math; :func:`signal_audit` runs the
two updates on a :class:`~torchrl_ript.trainers.RIPTTrainer`;
``benchmarks/signal_audit.py`` builds the trainer an example config describes.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torchrl.objectives import ClipPPOLoss

from torchrl_ript.config import RIPTConfig
from torchrl_ript.objectives.ppo import RIPTClipPPOLoss
from torchrl_ript.trainers.factory import make_policy_trainer
from torchrl_ript.trainers.ript import RIPTTrainer
from torchrl_ript.transforms.group_advantage import random_sign_advantages

__all__ = [
    "clip_band",
    "ratio_statistics",
    "log_ratio_variance_shares",
    "scale_statistics",
    "DecisionLogProbs",
    "decision_log_probs",
    "make_audit_trainer",
    "collect_one_batch",
    "audit_update",
    "signal_audit",
]


def clip_band(clip_epsilon) -> tuple[float, float]:
    """The ratio band ``(1 - eps_low, 1 + eps_high)`` of a PPO clip: a float or a
    ``(low, high)`` pair (``ClipPPOLoss``'s asymmetric clip), or a loss.

    Examples:
        >>> clip_band(0.2), clip_band((0.1, 0.3))
        ((0.8, 1.2), (0.9, 1.3))
    """
    if isinstance(clip_epsilon, ClipPPOLoss):
        loss = clip_epsilon
        if getattr(loss, "_asymmetric_clip", False):
            return 1.0 - float(loss.clip_epsilon_low), 1.0 + float(loss.clip_epsilon_high)
        clip_epsilon = float(loss.clip_epsilon)
    if isinstance(clip_epsilon, (tuple, list)):
        low, high = (float(e) for e in clip_epsilon)
    else:
        low = high = float(clip_epsilon)
    return 1.0 - low, 1.0 + high


def ratio_statistics(log_prob_new: torch.Tensor, log_prob_old: torch.Tensor, *, clip_epsilon) -> dict:
    """How far an update moved each decision: ratio band, KL estimators.

    ``log_prob_new`` / ``log_prob_old``: ``[M]`` log-probabilities of the same
    ``M`` decisions under the updated and the collecting policy. With
    ``log r = new - old`` per decision:

    * ``out_of_band``: share of decisions with ``r`` outside
      ``[1 - eps, 1 + eps]`` (:func:`clip_band`; the edges are inside);
    * ``k1 = mean(old - new)``, ``k3 = mean(r - 1 - log r)`` (Schulman's
      estimators of KL(old || new), per decision);
    * ``support_exit``: share of decisions the new policy gives probability 0
      (a token that left QueST's top-k: ``new = -inf``). They count as out of
      band; k1, k3 and ``max_abs_log_ratio`` are over the others (they would
      be infinite), as the loss's ``kl_approx`` is;
    * ``n``: decisions.

    Computed in float64. Returns plain floats (``None`` for k1/k3 when every
    decision left the support).

    Examples:
        >>> old = torch.zeros(4)
        >>> new = torch.tensor([1.0, 1.1, 1.5, 0.5]).log()  # ratios 1, 1.1, 1.5, 0.5
        >>> stats = ratio_statistics(new, old, clip_epsilon=0.2)
        >>> stats["out_of_band"], round(stats["k1"], 6), round(stats["k3"], 6), stats["n"]
        (0.5, 0.048093, 0.073093, 4)
    """
    new = torch.as_tensor(log_prob_new).detach().double().flatten()
    old = torch.as_tensor(log_prob_old).detach().double().flatten()
    if new.shape != old.shape:
        raise ValueError(f"log_prob_new and log_prob_old must hold the same decisions, got "
                         f"{tuple(new.shape)} and {tuple(old.shape)}.")
    if new.numel() == 0:
        raise ValueError("no decisions to compare (an empty batch): collect a batch with at least one rollout.")
    if not torch.isfinite(old).all():
        raise ValueError("log_prob_old holds non-finite values: the collected log-probs must be finite "
                         "(the sampling policy drew these actions).")
    low, high = clip_band(clip_epsilon)
    log_ratio = new - old
    exited = torch.isneginf(new)
    ratio = log_ratio.exp()
    outside = (ratio < low) | (ratio > high) | exited
    finite = log_ratio[~exited]
    k1 = k3 = max_abs = None
    if finite.numel():
        k1 = float((-finite).mean())
        k3 = float((finite.exp() - 1.0 - finite).mean())
        max_abs = float(finite.abs().max())
    return {
        "out_of_band": float(outside.double().mean()),
        "k1": k1,
        "k3": k3,
        "support_exit": float(exited.double().mean()),
        "max_abs_log_ratio": max_abs,
        "n": int(new.numel()),
    }


def log_ratio_variance_shares(log_ratio_per_dim: torch.Tensor) -> list[float] | None:
    """Each action dimension's share of the variance of the decisions' log-ratio.

    ``log_ratio_per_dim``: ``[M, A]``, the log-ratio ``log pi_new - log pi_old``
    of each decision split by action dimension (a factorised Laplace/Gaussian
    chunk: its per-element log-probs summed over the chunk), so that a
    decision's log-ratio is its row sum ``s``. The share of dimension ``d`` is
    ``Cov(x_d, s) / Var(s)``: the shares add up to 1 (a share below 0 or above
    1 means dimensions offset each other). ``None`` when ``s`` does not vary.

    Examples:
        >>> x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        >>> [round(s, 6) for s in log_ratio_variance_shares(x)]  # Var(s) = 2.5: 2 from dim 0, 0.5 from dim 1
        [0.8, 0.2]
    """
    x = torch.as_tensor(log_ratio_per_dim).detach().double()
    if x.ndim != 2:
        raise ValueError(f"log_ratio_per_dim must be [decisions, action_dim], got shape {tuple(x.shape)}.")
    x = x[torch.isfinite(x).all(-1)]
    total = x.sum(-1)
    centred_total = total - total.mean()
    var = float((centred_total**2).mean()) if total.numel() else 0.0
    if var <= 0.0:
        return None
    cov = ((x - x.mean(0)) * centred_total[:, None]).mean(0)
    return [float(c) / var for c in cov]


def scale_statistics(scale: torch.Tensor) -> dict:
    """Scale of a continuous policy per action dimension: ``[..., A]`` -> mean and min over the rest.

    Examples:
        >>> scale_statistics(torch.tensor([[[0.1, 1.0], [0.3, 2.0]]]))  # one decision, a chunk of 2, A=2
        {'mean': [0.2, 1.5], 'min': [0.1, 1.0], 'mean_all': 0.85}
    """
    s = torch.as_tensor(scale).detach().double()
    s = s.reshape(-1, s.shape[-1])
    return {"mean": [round(float(v), 6) for v in s.mean(0)], "min": [round(float(v), 6) for v in s.min(0).values],
            "mean_all": round(float(s.mean()), 6)}


@dataclass
class DecisionLogProbs:
    """The current policy on the valid decisions of a batch (:func:`decision_log_probs`).

    Attributes:
        log_prob: ``[M]`` log-probability of each collected decision now.
        stored: ``[M]`` the log-probability recorded when it was collected.
        elementwise: ``[M, A]`` (continuous policies) ``log_prob`` split by
            action dimension (summed over the chunk); ``None`` otherwise.
        scale: ``[M, ..., A]`` (continuous policies) the distribution's scale
            (the scale multiplier included); ``None`` otherwise.
    """

    log_prob: torch.Tensor
    stored: torch.Tensor
    elementwise: torch.Tensor | None = None
    scale: torch.Tensor | None = None


@torch.no_grad()
def decision_log_probs(
    loss: RIPTClipPPOLoss, batch: TensorDictBase, *, rows_per_pass: int | None = None
) -> DecisionLogProbs:
    """Score every valid decision of ``batch`` with the policy as it is now, the loss's way.

    The loss's own path (the one ``ratio="step"`` trains with, whatever
    ``loss.ratio`` is): its flattening to the valid decisions
    (``RIPTClipPPOLoss._decisions``, padding skipped, instructions broadcast)
    and ``ClipPPOLoss``'s scoring of them (the loss's functional weights).
    ``rows_per_pass`` trajectories go through the actor at a time (default:
    all). For distributions with ``elementwise_log_prob`` (``IndependentLaplace``,
    ``IndependentGaussian``) the per-dimension log-probs and the scale come too.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl_ript.modules import make_continuous_actor
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mean = torch.nn.Linear(3, 2)
        ...     def forward(self, obs):
        ...         return self.mean(obs), torch.full((*obs.shape[:-1], 2), 0.5)
        >>> actor = make_continuous_actor(Net(), in_keys=["obs"], event_dims=1)
        >>> steps = TensorDict(obs=torch.randn(2, 3, 3), action=torch.randn(2, 3, 2),
        ...                    mask=torch.tensor([[1, 1, 1], [1, 0, 0]]).bool(), batch_size=[2, 3])
        >>> steps["action_log_prob"] = actor.get_dist(steps).log_prob(steps["action"]).detach()
        >>> batch = TensorDict(steps=steps, advantage=torch.ones(2, 1), batch_size=[2])
        >>> scored = decision_log_probs(RIPTClipPPOLoss(actor), batch)
        >>> scored.log_prob.shape, float((scored.log_prob - scored.stored).abs().max()) < 1e-6
        (torch.Size([4]), True)
        >>> scored.elementwise.shape, torch.allclose(scored.elementwise.sum(-1), scored.log_prob)
        (torch.Size([4, 2]), True)
    """
    n = batch.shape[0]
    step = n if not rows_per_pass else int(rows_per_pass)
    parts = []
    for start in range(0, n, max(step, 1)):
        flat = loss._decisions(batch[start : start + step])
        log_prob, dist, _ = ClipPPOLoss._get_cur_log_prob(loss, flat)
        stored = flat.get(loss.tensor_keys.sample_log_prob).reshape(log_prob.shape)
        elementwise = scale = None
        if hasattr(dist, "elementwise_log_prob"):
            action = flat.get(loss.tensor_keys.action)
            per_element = dist.elementwise_log_prob(action)
            per_element = per_element.reshape(log_prob.shape[0], -1, per_element.shape[-1])
            elementwise = per_element.sum(1)
            base_scale = dist.base_dist.scale
            scale = base_scale.expand_as(dist.base_dist.loc)
        parts.append((log_prob, stored, elementwise, scale))
    if not parts:
        raise ValueError("the batch holds no trajectory: nothing to score.")
    log_prob, stored, elementwise, scale = zip(*parts)
    return DecisionLogProbs(
        log_prob=torch.cat(log_prob).detach(),
        stored=torch.cat(stored).detach(),
        elementwise=None if elementwise[0] is None else torch.cat(elementwise).detach(),
        scale=None if scale[0] is None else torch.cat(scale).detach(),
    )


def make_audit_trainer(
    config: RIPTConfig,
    *,
    bundle,
    env_fn,
    make_env,
    train_contexts,
    collector_options: Mapping | None,
) -> RIPTTrainer:
    """The collector and trainer :func:`~torchrl_ript.trainers.pipeline.ript_stage`
    builds from the same arguments (both call
    :func:`~torchrl_ript.trainers.factory.make_policy_trainer`: the configured
    collector, B, K, dynamic sampling, loss, optimizer, lr, epochs, minibatch,
    clip), without logger, checkpoints or evaluation."""
    return make_policy_trainer(config, bundle=bundle, env_fn=env_fn, make_env=make_env,
                               train_contexts=train_contexts, collector_options=collector_options, progress=False)


def collect_one_batch(trainer: RIPTTrainer) -> tuple[TensorDictBase, dict]:
    """One batch from the trainer's collector, as :meth:`RIPTTrainer.train` takes it;
    returns it and the collection statistics (``{}`` when the collector keeps none)."""
    trainer._sync_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)  # the draw-limit warning, as ript_stage shows it
        batch = next(iter(trainer.collector))
    if batch is None:  # the collector wrote into a user replay buffer
        batch = trainer.collector.replay_buffer[:]
    stats = getattr(trainer.collector, "last_stats", None)
    return batch, ({} if stats is None else stats.as_dict())


def _trained_params(trainer: RIPTTrainer) -> list[torch.Tensor]:
    return [p for group in trainer.optimizer.param_groups for p in group["params"]]


def audit_update(trainer: RIPTTrainer, batch: TensorDictBase, advantage: torch.Tensor) -> dict:
    """One configured update (:meth:`RIPTTrainer.update`) of ``trainer`` on ``batch``
    with ``advantage``, measured on the same batch.

    Before the update the collected decisions are rescored with the unchanged
    weights (``logp_check_max_abs_diff``: should be ~1e-5; a larger value means
    the loss does not score what the collector sampled) and
    ``logp_before_sum`` fingerprints the starting weights. After it,
    :func:`ratio_statistics` of the new log-probs against the collected ones,
    the trainer's ``train/*`` record (``grad_norm``: the mean over gradient
    steps of the total norm *before* clipping; ``None`` without
    ``max_grad_norm``), and for continuous policies :func:`scale_statistics`
    before and after and :func:`log_ratio_variance_shares`. The weights and
    the optimizer are left updated: :func:`signal_audit` restores them.
    """
    loss = trainer.loss
    rows = trainer.minibatch_size
    batch = batch.clone(False)
    batch.set(loss.tensor_keys.advantage, advantage)
    before = decision_log_probs(loss, batch, rows_per_pass=rows)
    record = trainer.update(batch)
    after = decision_log_probs(loss, batch, rows_per_pass=rows)
    result = ratio_statistics(after.log_prob, before.stored, clip_epsilon=loss)
    result.update(
        grad_norm=record.get("train/grad_norm"),
        train_loss=record.get("train/loss"),
        train_clip_fraction=record.get("train/clip_fraction"),
        train_kl_approx=record.get("train/kl_approx"),
        gradient_steps=trainer.ppo_epochs * -(-batch.shape[0] // trainer.minibatch_size),
        lr=trainer.optimizer.param_groups[0]["lr"],
        logp_check_max_abs_diff=float((before.log_prob - before.stored).abs().max()),
        logp_before_sum=float(before.log_prob.double().sum()),
    )
    if before.scale is not None:
        result["scale_before"] = scale_statistics(before.scale)
        result["scale_after"] = scale_statistics(after.scale)
        result["log_ratio_variance_share"] = log_ratio_variance_shares(after.elementwise - before.elementwise)
    return result


def signal_audit(trainer: RIPTTrainer, batch: TensorDictBase, *, seed: int = 0) -> dict:
    """The configured update on ``batch`` twice from the same start: real and null advantages.

    ``real``: the batch's advantages; ``null``: :func:`random_sign_advantages`
    of them (``seed``). Before each run the trained weights, the optimizer's
    state (as it is at the call: a freshly built trainer's is empty) and the
    minibatch shuffling are reset to the same start, and afterwards too: the
    trainer is left as it was. Returns ``{"real": ..., "null": ...}``
    (:func:`audit_update` results) and the summary keys ``out_of_band_real``,
    ``out_of_band_null``, ``k1_real``, ``k1_null``, ``k3_real``, ``k3_null``,
    ``kl_real``/``kl_null`` (= k3), ``grad_norm_real``/``grad_norm_null``,
    ``n_decisions``, ``n_trajectories``, ``advantage_decision_mean_real`` /
    ``_null`` (the advantage averaged over decisions rather than trajectories:
    what a per-decision ratio weighs; RLOO advantages average 0 per
    trajectory, but failed rollouts that run to the time limit hold more
    decisions) and ``same_start`` (both runs rescored the batch identically
    before their update).

    Examples:
        >>> from torchrl.envs import SerialEnv
        >>> from torchrl_ript import ContextDataset, ContextToyVLAEnv, GroupCollector
        >>> from torchrl_ript.modules.toy_policies import toy_laplace_actor
        >>> from torchrl_ript.trainers import make_optimizer
        >>> _ = torch.manual_seed(0)
        >>> contexts = ContextDataset(torch.rand(16, 2) - 0.5, [0] * 16, ["track"], seed=0)
        >>> make_env = lambda: ContextToyVLAEnv(action_dim=2, max_steps=4, success_tol=0.15)
        >>> actor, _ = toy_laplace_actor()
        >>> collector = GroupCollector(SerialEnv(4, make_env), actor, context_dataset=contexts, group_size=4,
        ...                            trajs_per_batch=8, max_frames_per_traj=4, seed=0, dynamic_sampling=False)
        >>> trainer = RIPTTrainer(collector=collector, loss=RIPTClipPPOLoss(actor, ratio="step"),
        ...                       optimizer=make_optimizer(actor, lr=1e-2), num_steps=1, ppo_epochs=2,
        ...                       minibatch_size=4, progress=False, seed=0)
        >>> batch, _ = collect_one_batch(trainer)
        >>> start = [p.detach().clone() for p in actor.parameters()]
        >>> audit = signal_audit(trainer, batch, seed=0)
        >>> audit["same_start"], audit["n_trajectories"], 0.0 <= audit["out_of_band_null"] <= 1.0
        (True, 8, True)
        >>> all(torch.equal(a, b) for a, b in zip(start, actor.parameters()))  # left as found
        True
        >>> collector.shutdown()
    """
    if trainer.null_advantages:  # the audit runs the null update itself, beside the real one
        raise ValueError("signal audit: ript.null_advantages=true would randomise the real update too; "
                         "audit with ript.null_advantages=false (the audit's null is that control's update).")
    advantage = batch.get(trainer.loss.tensor_keys.advantage)
    if batch.shape[0] == 0:
        raise ValueError(
            "the batch holds no trajectory (dynamic sampling found no informative group): collect with a "
            "policy that sometimes succeeds and sometimes fails, or with ript.dynamic_sampling=false."
        )
    params = _trained_params(trainer)
    start = [p.detach().clone() for p in params]
    optimizer_state = _copy_state(trainer.optimizer.state_dict())
    shuffle_state = trainer._shuffle.get_state()

    def reset() -> None:
        with torch.no_grad():
            for p, value in zip(params, start):
                p.copy_(value)
        trainer.optimizer.load_state_dict(_copy_state(optimizer_state))
        trainer._shuffle.set_state(shuffle_state)  # both runs see the same minibatches

    keys = trainer.loss.tensor_keys
    decisions = batch.get((keys.steps, keys.mask)).reshape(batch.shape[0], -1).sum(-1).to(torch.float64)
    runs = {}
    try:
        for name, values in (("real", advantage), ("null", random_sign_advantages(advantage, seed=seed))):
            reset()
            runs[name] = audit_update(trainer, batch, values)
            # per-decision ratios weigh a trajectory by its decisions: long (failed) rollouts weigh more
            per_trajectory = values.detach().reshape(-1).to(torch.float64)
            runs[name]["advantage_decision_mean"] = float((per_trajectory * decisions).sum() / decisions.sum())
            runs[name]["negative_advantage_decision_share"] = float(
                decisions[per_trajectory < 0].sum() / decisions.sum())
    finally:
        reset()
    real, null = runs["real"], runs["null"]
    summary = {
        "out_of_band_real": real["out_of_band"],
        "out_of_band_null": null["out_of_band"],
        "kl_real": real["k3"],
        "kl_null": null["k3"],
        "kl_estimator": "k3 = mean(r - 1 - log r) per decision",
        "k1_real": real["k1"],
        "k1_null": null["k1"],
        "k3_real": real["k3"],
        "k3_null": null["k3"],
        "grad_norm_real": real["grad_norm"],
        "grad_norm_null": null["grad_norm"],
        "grad_norm_kind": "mean over the update's gradient steps of the total norm before clipping",
        "n_decisions": real["n"],
        "n_trajectories": int(batch.shape[0]),
        "advantage_abs_mean": float(advantage.abs().double().mean()),
        "advantage_decision_mean_real": real["advantage_decision_mean"],
        "advantage_decision_mean_null": null["advantage_decision_mean"],
        "same_start": real["logp_before_sum"] == null["logp_before_sum"],
    }
    return {**summary, "real": real, "null": null}


def _copy_state(state: dict) -> dict:
    return {
        "state": {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": [dict(g) for g in state["param_groups"]],
    }
