"""Which context a RIPT group starts from: pluggable samplers of a :class:`ContextDataset`.

A :class:`~torchrl_ript.data.ContextDataset` draws the start of every rollout
group through its sampler:

* :class:`UniformSampler` (the default, the paper's setting): every context
  equally likely;
* :class:`PerTaskSampler`: a task uniformly, then one of its contexts;
* :class:`AdaptiveSampler` (beyond the paper): keeps a success estimate per
  context, fed with the outcomes of finished rollouts
  (:meth:`ContextDataset.record_outcomes`, or the replay-buffer transform
  :class:`~torchrl_ript.transforms.ContextOutcomeFeed` on a collector's
  buffer, which :class:`~torchrl_ript.collectors.GroupCollector` adds for
  such samplers), and draws contexts in
  proportion to the chance that a group of K rollouts from them has mixed
  outcomes, i.e. is kept by dynamic sampling. A share ``explore`` of the draws
  stays uniform, so no context is starved and stale estimates get refreshed.

Why: a group of K rollouts from a context the policy always solves (or
always fails) is rejected by dynamic sampling after costing K full rollouts;
when most contexts are like that (a 1-demo policy succeeds near its demo and
fails far from it) most of the simulation is wasted. The adaptive sampler
spends it where the outcome is still uncertain.

Samplers pickle and save with the dataset (:meth:`state_dict` /
:meth:`load_state_dict`), so their estimates cross spawned processes and
checkpoints.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "AdaptiveSampler",
    "ContextSampler",
    "PerTaskSampler",
    "UniformSampler",
    "make_sampler",
    "SAMPLERS",
]


class ContextSampler:
    """Base class: choose ``n`` context rows of a dataset.

    Subclasses implement :meth:`draw`; stateful ones also :meth:`record`,
    :meth:`state_dict` and :meth:`load_state_dict`. ``name`` identifies the
    sampler in saved datasets and reprs.
    """

    name = "base"
    #: whether :meth:`record` uses outcomes (collectors then feed it every finished rollout)
    learns_from_outcomes = False

    def draw(self, dataset, n: int, generator: torch.Generator) -> torch.Tensor:
        """``[n]`` int64 row indices of ``dataset`` (with replacement)."""
        raise NotImplementedError

    def record(self, context_ids: torch.Tensor, successes: torch.Tensor) -> None:
        """Outcomes of finished rollouts (ignored by stateless samplers)."""

    def config(self) -> dict:
        """Constructor keywords (a fresh sampler of the same kind: ``type(self)(**config)``)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def fresh(self) -> ContextSampler:
        """A sampler of the same kind and settings, without learned state."""
        return type(self)(**self.config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class UniformSampler(ContextSampler):
    """Every context row equally likely (the paper's sampling)."""

    name = "uniform"

    def draw(self, dataset, n, generator):
        return torch.randint(len(dataset), (n,), generator=generator)


class PerTaskSampler(ContextSampler):
    """A task uniformly, then one of its rows: tasks with more contexts are not favoured."""

    name = "per_task"

    def draw(self, dataset, n, generator):
        present = torch.unique(dataset.task_ids)
        tasks = present[torch.randint(present.numel(), (n,), generator=generator)]
        index = torch.empty(n, dtype=torch.int64)
        for task_id in tasks.unique():
            where = tasks == task_id
            pool = dataset.task_contexts(int(task_id))
            index[where] = pool[torch.randint(pool.numel(), (int(where.sum()),), generator=generator)]
        return index


class AdaptiveSampler(ContextSampler):
    """Draw contexts whose groups are likely to be informative (mixed outcomes).

    Each context ``c`` keeps (discounted) counts of successes ``s_c`` and
    failures ``f_c`` of the rollouts that started from it; its success
    probability ``p_c`` has the posterior ``Beta(prior + s_c, prior + f_c)``.
    A group of ``K`` rollouts is informative unless all ``K`` succeed or all
    fail, so the sampler scores each context by

    ``score_c = 1 - E[p_c^K] - E[(1 - p_c)^K]``

    (closed form under the Beta posterior: ``E[p^K] = prod_i (a+i)/(a+b+i)``),
    and draws ``c`` with probability ``(1 - explore) * score_c / sum(score)
    + explore / N``. An unseen context scores ``(K-1)/(K+1)`` (high: it gets
    tried), one that always fails or always succeeds decays towards 0 as
    evidence accumulates, one with ``p`` near 1/2 scores near 1. The uniform
    share ``explore`` guarantees every context at least ``explore / N`` of the
    draws.

    With ``task_pooling > 0`` a context's prior is its task's pooled estimate
    instead of the flat ``Beta(prior, prior)``: ``Beta(w m_t, w (1 - m_t))``
    with ``w = task_pooling`` and ``m_t`` the posterior mean success of all
    the task's outcomes so far. An unseen start of a task whose groups all
    succeed then scores low before it is ever drawn (with 100 starts and a
    few hundred groups per run most starts are seen once or twice, so the
    per-start evidence alone comes late). Measured on the main job: fewer
    groups drawn for the same informative ones, but the data moves away from
    the nearly solved task and the learning gain did not grow (README "The
    default main job"), so it is off by default.

    Keyword Args:
        group_size (int): K, rollouts per group (what "informative" means).
        explore (float): share of uniform draws, in ``[0, 1]``. Defaults to 0.2.
        prior (float): Beta pseudo-count of both outcomes (0.5: Jeffreys).
        memory (float, optional): forget old outcomes: each new outcome of a
            context first multiplies its counts by ``1 - 1/memory`` (the
            policy changes while it trains). ``None`` (the default) means
            ``4 * group_size``; ``float("inf")`` keeps every outcome.
        power (float): sharpen (``> 1``) or flatten (``< 1``) the scores.
        task_pooling (float): pseudo-count ``w`` of the task's pooled
            estimate in each context's prior; 0 (the default) keeps the flat
            ``Beta(prior, prior)``. Needs the task of each context, which
            :meth:`draw` takes from the dataset (``task_ids`` elsewhere).

    Examples:
        >>> import torch
        >>> from torchrl_ript.data import ContextDataset
        >>> ds = ContextDataset(torch.zeros(3, 2), [0, 0, 0], ["t"],
        ...                     sampler=AdaptiveSampler(group_size=4, explore=0.1), seed=0)
        >>> ds.record_outcomes(torch.tensor([0] * 8 + [1] * 8),
        ...                    torch.tensor([1] * 8 + [1, 0] * 4))  # context 0 always succeeds
        >>> p = ds.context_sampler.probabilities(len(ds))
        >>> bool(p[1] > p[2] > p[0]), round(float(p.sum()), 6)  # mixed > unseen > solved
        (True, 1.0)
        >>> pooled = ContextDataset(torch.zeros(4, 2), [0, 0, 1, 1], ["solved", "mixed"],
        ...                         sampler=AdaptiveSampler(group_size=4, task_pooling=4.0), seed=0)
        >>> pooled.record_outcomes(torch.tensor([0] * 8 + [2] * 8), torch.tensor([1] * 8 + [1, 0] * 4))
        >>> s = pooled.context_sampler.scores(4, task_ids=pooled.task_ids)
        >>> bool(s[3] > 3 * s[1])  # the unseen start of the mixed task before the unseen start of the solved one
        True
    """

    name = "adaptive"
    learns_from_outcomes = True

    def __init__(
        self,
        *,
        group_size: int = 8,
        explore: float = 0.2,
        prior: float = 0.5,
        memory: float | None = None,
        power: float = 1.0,
        task_pooling: float = 0.0,
    ) -> None:
        if int(group_size) < 2:
            raise ValueError(f"group_size (K) must be >= 2, got {group_size}.")
        if not 0.0 <= float(explore) <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}.")
        if float(prior) <= 0:
            raise ValueError(f"prior must be > 0 (a Beta pseudo-count), got {prior}.")
        if memory is not None and float(memory) < 1:
            raise ValueError(f"memory must be >= 1 outcome (or None: never forget), got {memory}.")
        if float(power) <= 0:
            raise ValueError(f"power must be > 0, got {power}.")
        if float(task_pooling) < 0:
            raise ValueError(f"task_pooling must be >= 0 (a pseudo-count; 0: no pooling), got {task_pooling}.")
        self.group_size = int(group_size)
        self.explore = float(explore)
        self.prior = float(prior)
        self.memory = 4.0 * self.group_size if memory is None else float(memory)
        self.power = float(power)
        self.task_pooling = float(task_pooling)
        self.successes = torch.zeros(0, dtype=torch.float64)
        self.failures = torch.zeros(0, dtype=torch.float64)
        self.draws = torch.zeros(0, dtype=torch.int64)

    def config(self) -> dict:
        return dict(group_size=self.group_size, explore=self.explore, prior=self.prior,
                    memory=self.memory, power=self.power, task_pooling=self.task_pooling)

    def _grow(self, n: int) -> None:
        if self.successes.numel() < n:
            pad = n - self.successes.numel()
            self.successes = torch.cat([self.successes, torch.zeros(pad, dtype=torch.float64)])
            self.failures = torch.cat([self.failures, torch.zeros(pad, dtype=torch.float64)])
            self.draws = torch.cat([self.draws, torch.zeros(pad, dtype=torch.int64)])

    def _posterior(self, n: int, task_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Beta posterior ``(a, b)`` of each of the first ``n`` contexts."""
        self._grow(n)
        successes, failures = self.successes[:n], self.failures[:n]
        if self.task_pooling == 0 or task_ids is None:
            return self.prior + successes, self.prior + failures
        task_ids = torch.as_tensor(task_ids, dtype=torch.int64).reshape(-1)[:n]
        if task_ids.numel() != n:
            raise ValueError(f"task_ids must give the task of each of the {n} contexts, got {task_ids.numel()}.")
        pooled_s = torch.bincount(task_ids, weights=successes)
        pooled_f = torch.bincount(task_ids, weights=failures, minlength=pooled_s.numel())
        mean = ((self.prior + pooled_s) / (2 * self.prior + pooled_s + pooled_f))[task_ids]
        return self.task_pooling * mean + successes, self.task_pooling * (1 - mean) + failures

    def estimates(self, n: int, *, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean success probability of the first ``n`` contexts."""
        a, b = self._posterior(n, task_ids)
        return a / (a + b)

    def scores(self, n: int, *, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Expected chance that a group of K from each context is informative."""
        a, b = self._posterior(n, task_ids)
        all_success = torch.ones_like(a)
        all_failure = torch.ones_like(a)
        for i in range(self.group_size):  # E[p^K] = prod_i (a+i)/(a+b+i) under Beta(a, b)
            all_success = all_success * (a + i) / (a + b + i)
            all_failure = all_failure * (b + i) / (a + b + i)
        return (1.0 - all_success - all_failure).clamp_min(0.0).pow(self.power)

    def probabilities(self, n: int, *, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The draw probability of each of the first ``n`` contexts."""
        scores = self.scores(n, task_ids=task_ids)
        total = float(scores.sum())
        uniform = torch.full((n,), 1.0 / n, dtype=torch.float64)
        if total <= 0 or not math.isfinite(total):
            return uniform
        return (1.0 - self.explore) * scores / total + self.explore * uniform

    def draw(self, dataset, n, generator):
        probs = self.probabilities(len(dataset), task_ids=dataset.task_ids)
        index = torch.multinomial(probs, n, replacement=True, generator=generator)
        self.draws += torch.bincount(index, minlength=self.draws.numel())[: self.draws.numel()]
        return index

    def record(self, context_ids, successes):
        context_ids = torch.as_tensor(context_ids, dtype=torch.int64).reshape(-1)
        successes = torch.as_tensor(successes).reshape(len(context_ids), -1)[:, 0].to(torch.float64)
        if context_ids.numel() == 0:
            return
        self._grow(int(context_ids.max()) + 1)
        keep = 1.0 - 1.0 / self.memory
        for context, success in zip(context_ids.tolist(), (successes > 0).tolist()):
            self.successes[context] *= keep
            self.failures[context] *= keep
            if success:
                self.successes[context] += 1.0
            else:
                self.failures[context] += 1.0

    def state_dict(self) -> dict:
        return {"successes": self.successes.clone(), "failures": self.failures.clone(),
                "draws": self.draws.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.successes = torch.as_tensor(state["successes"], dtype=torch.float64).clone()
        self.failures = torch.as_tensor(state["failures"], dtype=torch.float64).clone()
        self.draws = torch.as_tensor(state["draws"], dtype=torch.int64).clone()


#: The built-in samplers by name (``ContextDataset(sampler="adaptive")``).
SAMPLERS = {cls.name: cls for cls in (UniformSampler, PerTaskSampler, AdaptiveSampler)}


def make_sampler(sampler: str | ContextSampler, **kwargs) -> ContextSampler:
    """A sampler from its name (``kwargs`` go to its constructor) or a sampler object."""
    if isinstance(sampler, ContextSampler):
        if kwargs:
            raise ValueError("sampler options are given with a sampler object: set them on the object.")
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(
            f"sampler must be one of {list(SAMPLERS)} or a ContextSampler, got {sampler!r}."
        )
    return SAMPLERS[sampler](**kwargs)
