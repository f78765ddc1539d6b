"""The barrier-free engine: out-of-order completion, timing-independent batches,
carry-over of in-flight rollouts, several batches into a user buffer."""
import pytest
import torch
from torchrl.envs import AsyncEnvPool

from torchrl_ript import ContextDataset, GroupCollector, make_ript_replay_buffer
from torchrl_ript.collectors import Rollout, RolloutEngine

from toy_helpers import SlowToyEnv, clipped_oracle, laplace_actor


def contexts(n=24, seed=0, noise_std=0.0):
    g = torch.Generator().manual_seed(seed)
    return ContextDataset(torch.rand(n, 2, generator=g) - 0.5, [0] * n, ["track"], seed=seed,
                          noise_std=noise_std)


def pool(n=4, **slow):
    return AsyncEnvPool([SlowToyEnv(**slow)] * n, backend="threading")


def test_slots_finish_out_of_order_and_each_rollout_keeps_its_context():
    # far targets step slowly: later rollouts overtake earlier ones
    ctx = contexts(8)
    engine = RolloutEngine(pool(3, by_target=0.02), clipped_oracle(1.0), ctx, horizon=4)
    todo = [Rollout(i, 0, group_id=i) for i in range(8)]
    done = []
    engine.run(lambda: todo.pop(0) if todo else None, lambda r: done.append(r) is not None)
    engine.close()
    order = [r.context_id for r in done]
    assert sorted(order) == list(range(8))
    assert order != sorted(order), order  # completion order is not start order
    assert all(r.success for r in done)  # the unclipped oracle reaches every context's target


def _batches(seed_of_timing, n_batches=2, **kwargs):
    torch.manual_seed(seed_of_timing)  # only the envs' delays differ between calls
    c = GroupCollector(pool(4, jitter=0.004), clipped_oracle(0.2), context_dataset=contexts(noise_std=0.15),
                       group_size=4, trajs_per_batch=8, max_frames_per_traj=4, seed=0, **kwargs)
    it = iter(c)
    out = [next(it) for _ in range(n_batches)]
    stats = c.last_stats
    c.shutdown()
    return out, stats


def test_batches_of_a_deterministic_policy_do_not_depend_on_slot_timing():
    (a1, a2), stats = _batches(0)
    (b1, b2), _ = _batches(1)
    for a, b in ((a1, a2), (b1, b2)):
        assert a.batch_size == b.batch_size == (8,)
    for x, y in ((a1, b1), (a2, b2)):
        for key in ("group_id", "context_id", "reward", "length", "advantage", ("steps", "observation", "state"),
                    ("steps", "action"), ("collector", "traj_ids")):
            assert torch.equal(x[key], y[key]), key
    # noisy starts: members of a group start from different states, and outcomes differ
    first = a1["steps", "observation", "state"][:, 0, 2:4]
    g0 = a1["group_id"] == a1["group_id"][0]
    assert not torch.equal(first[g0][0], first[g0][1])
    assert stats.groups_completed >= stats.groups_kept == 2


def test_user_replay_buffer_fills_on_every_batch():
    actor, _ = laplace_actor(init_scale=0.3)
    rb = make_ript_replay_buffer(8, 4)
    c = GroupCollector(pool(4), actor, context_dataset=contexts(), group_size=4, trajs_per_batch=8,
                       max_frames_per_traj=4, seed=0, replay_buffer=rb)
    it = iter(c)
    seen = set()
    for _ in range(3):
        assert next(it) is None
        stats = c.last_stats
        assert stats.rollouts_kept == 8 and not stats.hit_draw_limit
        rows = rb[:]
        assert len(rows) == 8 and "advantage" in rows.keys()
        ids = set(rows["group_id"].tolist())
        assert not ids & seen  # this batch's groups replaced the previous ones
        seen |= ids
    c.shutdown()


def test_in_flight_rollouts_carry_over_with_their_policy_version():
    c = GroupCollector(pool(4, by_target=0.01), clipped_oracle(0.2), context_dataset=contexts(noise_std=0.15),
                       group_size=4, trajs_per_batch=8, max_frames_per_traj=4, seed=0,
                       keep_in_flight=True, max_staleness=1)
    it = iter(c)
    carried, versions = [], []
    for _ in range(4):
        batch = next(it)
        carried.append(c.last_stats.rollouts_carried)
        versions.append(batch["policy_version"])
        assert batch.batch_size == (8,)
        for g in batch["group_id"].unique():  # complete, single-context groups
            members = batch["group_id"] == g
            assert int(members.sum()) == 4 and batch["context_id"][members].unique().numel() == 1
    c.shutdown()
    assert sum(carried) > 0  # something was in flight at a stop and kept
    # a batch holds rollouts started under its own version or one before (max_staleness=1)
    for i, v in enumerate(versions):
        assert int(v.max()) <= i and int(v.min()) >= i - 1
    assert any(int(v.min()) < i for i, v in enumerate(versions))  # carried rows were used


def test_staleness_zero_reruns_carried_groups():
    c = GroupCollector(pool(4, by_target=0.01), clipped_oracle(0.2), context_dataset=contexts(noise_std=0.15),
                       group_size=4, trajs_per_batch=8, max_frames_per_traj=4, seed=0,
                       keep_in_flight=True, max_staleness=0)
    it = iter(c)
    for i in range(3):
        batch = next(it)
        assert torch.equal(batch["policy_version"], torch.full((8,), i))
    c.shutdown()


@pytest.mark.parametrize("keep", [False, True])
def test_stats_add_up(keep):
    c = GroupCollector(pool(4, jitter=0.002), clipped_oracle(0.2), context_dataset=contexts(noise_std=0.15),
                       group_size=4, trajs_per_batch=8, max_frames_per_traj=4, seed=0, keep_in_flight=keep)
    it = iter(c)
    for _ in range(2):
        batch = next(it)
        s = c.last_stats
        assert s.rollouts_kept == batch.shape[0] == 8 == 4 * s.groups_kept
        assert s.groups_completed == s.groups_kept + s.groups_all_success + s.groups_all_failure
        assert s.env_steps == s.decision_steps  # the toy env runs one env step per decision
        if not keep:  # (carried rows hold decisions taken during the previous batch)
            assert s.decision_steps >= int(batch["length"].sum())
            assert s.rollouts_finished >= 8 and s.rollouts_carried == 0
    c.shutdown()


class _InstructionRecorder:
    """An oracle that also records the instruction each call received, per row."""

    in_keys = [("observation", "state"), "language_instruction"]
    out_keys = ["action", "action_log_prob"]

    def __init__(self):
        self.seen = []

    def __call__(self, td):
        from torchrl_ript.data.instructions import instruction_strings

        self.seen.append(instruction_strings(td, "language_instruction", td.shape[0]))
        td["action"] = td["observation", "state"][..., 2:4].clamp(-0.5, 0.5)
        td["action_log_prob"] = torch.zeros(td.shape)
        return td


def test_process_pool_exchanges_through_shared_memory_and_the_policy_gets_each_contexts_instruction():
    from functools import partial

    from torchrl_ript import ContextToyVLAEnv
    from torchrl_ript.trainers.factory import make_batched_env

    g = torch.Generator().manual_seed(0)
    ctx = ContextDataset(torch.rand(8, 2, generator=g) - 0.5, [0, 1] * 4, ["left", "right"],
                         ["reach left", "reach right"], seed=0)
    env = make_batched_env(partial(ContextToyVLAEnv, action_dim=2, task_names=["left", "right"]), 2)
    assert env.resolved_exchange == "shm"  # no string leaves in what the workers send back
    policy = _InstructionRecorder()
    c = GroupCollector(env, policy, context_dataset=ctx, group_size=2, trajs_per_batch=4,
                       max_frames_per_traj=4, seed=0, dynamic_sampling=False)
    batch = next(iter(c))
    c.shutdown()
    assert {text for call in policy.seen for text in call} <= {"reach left", "reach right"}
    stored = list(batch["language_instruction"])
    expected = [ctx.instruction(int(t)) for t in ctx.task_ids[batch["context_id"]]]
    assert stored == expected and len(set(stored)) == 2, stored
    # the oracle reaches every target: the env and the engine agree on which context ran
    assert bool((batch["reward"].reshape(4, -1).sum(-1) == 1).all())
    # a policy that does not read the instruction: it is still stored with each trajectory
    c = GroupCollector(make_batched_env(partial(ContextToyVLAEnv, action_dim=2, task_names=["left", "right"]), 2),
                       clipped_oracle(1.0), context_dataset=ctx, group_size=2, trajs_per_batch=4,
                       max_frames_per_traj=4, seed=0, dynamic_sampling=False)
    batch = next(iter(c))
    c.shutdown()
    assert list(batch["language_instruction"]) == [ctx.instruction(int(t)) for t in ctx.task_ids[batch["context_id"]]]
