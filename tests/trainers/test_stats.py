"""The paired test used for every "RIPT vs SFT" p-value."""
import itertools

import pytest

from torchrl_ript.trainers.stats import paired_count_test, paired_success_test, per_start_success


def _brute_force_p(gained: int, lost: int) -> float:
    # enumerate every sign assignment of the discordant pairs under H0 (fair coin)
    n = gained + lost
    hits = sum(1 for signs in itertools.product((0, 1), repeat=n) if sum(signs) >= gained)
    return hits / 2**n if n else 1.0


@pytest.mark.parametrize("gained,lost,both,neither", [(5, 1, 10, 4), (0, 3, 2, 2), (7, 7, 0, 1), (0, 0, 3, 3)])
def test_exact_p_value_matches_enumeration(gained, lost, both, neither):
    before = [0] * gained + [1] * lost + [1] * both + [0] * neither
    after = [1] * gained + [0] * lost + [1] * both + [0] * neither
    out = paired_success_test(before, after)
    assert (out["gained"], out["lost"], out["n"]) == (gained, lost, len(before))
    assert out["p_value"] == pytest.approx(_brute_force_p(gained, lost))
    assert out["sr_after"] - out["sr_before"] == pytest.approx((gained - lost) / len(before))


def test_concordant_contexts_do_not_change_the_p_value():
    small = paired_success_test([0, 0, 0], [1, 1, 1])
    padded = paired_success_test([0, 0, 0] + [1] * 50 + [0] * 50, [1, 1, 1] + [1] * 50 + [0] * 50)
    assert small["p_value"] == padded["p_value"] == 1 / 8


def test_unpaired_inputs_raise():
    with pytest.raises(ValueError, match="same contexts"):
        paired_success_test([1, 0], [1])
    with pytest.raises(ValueError, match="no outcomes"):
        paired_success_test([], [])


def _brute_force_count_p(before, after):
    # every sign assignment of the per-start differences under H0
    diffs = [a - b for b, a in zip(before, after)]
    observed = sum(diffs)
    totals = [sum(s * abs(d) for s, d in zip(signs, diffs)) for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(t >= observed for t in totals) / len(totals)


@pytest.mark.parametrize("before,after,rollouts", [
    ([0, 1, 2, 4, 3], [2, 3, 2, 3, 4], 4),
    ([8, 8, 0, 5, 6, 2], [8, 7, 1, 8, 2, 2], 8),
    ([3, 3], [3, 3], 3),
    ([0, 0, 1, 1], [1, 0, 1, 0], 1),
])
def test_count_test_matches_enumeration(before, after, rollouts):
    out = paired_count_test(before, after, rollouts=rollouts)
    assert out["p_value"] == pytest.approx(_brute_force_count_p(before, after))
    assert out["starts_up"] == sum(a > b for b, a in zip(before, after))
    assert out["starts_down"] == sum(a < b for b, a in zip(before, after))
    assert out["sr_after"] - out["sr_before"] == pytest.approx((sum(after) - sum(before)) / (len(before) * rollouts))


@pytest.mark.parametrize("gained,lost,both,neither", [(5, 1, 10, 4), (0, 3, 2, 2), (7, 7, 0, 1)])
def test_count_test_with_one_rollout_is_mcnemar(gained, lost, both, neither):
    before = [0] * gained + [1] * lost + [1] * both + [0] * neither
    after = [1] * gained + [0] * lost + [1] * both + [0] * neither
    assert paired_count_test(before, after, rollouts=1)["p_value"] == pytest.approx(
        paired_success_test(before, after)["p_value"])


def test_per_start_success_groups_rollouts_start_by_start():
    out = per_start_success([1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1], rollouts=3)
    assert out["counts"] == [3, 0, 1, 1] and out["n_starts"] == 4
    assert (out["never"], out["mixed"], out["always"]) == (0.25, 0.5, 0.25)
    assert out["solved_at_least_once"] == 0.75 and out["sr"] == pytest.approx(5 / 12)


def test_count_inputs_are_checked():
    with pytest.raises(ValueError, match="whole number of starts"):
        per_start_success([1, 0, 1], rollouts=2)
    with pytest.raises(ValueError, match=">= 1"):
        per_start_success([1], rollouts=0)
    with pytest.raises(ValueError, match="same starts"):
        paired_count_test([1, 2], [1], rollouts=2)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        paired_count_test([3], [1], rollouts=2)
    with pytest.raises(ValueError, match="no starts"):
        paired_count_test([], [], rollouts=2)
