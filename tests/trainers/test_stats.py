"""The paired test used for every "RIPT vs SFT" p-value."""
import itertools

import pytest

from torchrl_ript.trainers.stats import paired_success_test


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
