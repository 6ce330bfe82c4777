"""The statistics that decide admission and report evaluation, on known numbers."""

from __future__ import annotations

import pytest

from coachlab.stats import (
    clustered_bootstrap,
    min_detectable_difference,
    paired_uplift,
    sign_flip_test,
    sign_test,
    sign_test_floor,
)


def test_two_lucky_trials_cannot_pass_the_sign_test() -> None:
    # The bootstrap CI of [3, 3] -> [4, 4] has zero width; the sign test is not fooled.
    assert str(paired_uplift([3, 3], [4, 4])) == "1.00 [1.00, 1.00]"
    test = sign_test([3, 3], [4, 4])
    assert test.wins == 2 and test.p_value == 0.25
    assert not test.passes(alpha=0.05, min_effect=0.0, min_pairs=2)


def test_sign_test_exact_values_ties_dropped() -> None:
    test = sign_test([0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 0])
    assert (test.wins, test.losses, test.ties) == (5, 1, 1)
    assert test.p_value == pytest.approx(7 / 64)  # P(X >= 5 | n=6)
    assert not test.passes(alpha=0.05, min_effect=0.0, min_pairs=5)
    five = sign_test([0] * 5, [1] * 5)
    assert five.p_value == 1 / 32 and five.passes(alpha=0.05, min_effect=0.0, min_pairs=5)
    assert not five.passes(alpha=0.05, min_effect=1.5, min_pairs=5)  # the effect is 1.0


def test_zero_variance_one_trial_and_all_ties_never_pass() -> None:
    assert sign_test([1, 1, 1], [1, 1, 1]).p_value == 1.0  # all tied: nothing in favour
    one = sign_test([0], [1])
    assert one.p_value == 0.5 and not one.passes(alpha=0.05, min_effect=0, min_pairs=1)
    empty = sign_test([], [])
    assert empty.pairs == 0 and empty.mean_difference is None and not empty.passes(alpha=0.5, min_effect=0, min_pairs=0)
    with pytest.raises(ValueError, match="differ in length"):
        sign_test([1], [1, 2])


def test_sign_test_floor() -> None:
    assert sign_test_floor(0.05) == 5 and sign_test_floor(0.01) == 7 and sign_test_floor(0.5) == 1


def test_clustered_bootstrap_is_wider_than_pooled_when_scenarios_differ() -> None:
    clusters = {"easy": [1.0] * 4, "hard": [0.0] * 4, "mid": [1.0, 0.0, 1.0, 0.0]}
    est = clustered_bootstrap(clusters, seed=1)
    assert est.mean == 0.5 and est.n == 12
    assert est.low is not None and est.high is not None
    assert est.low <= 0.2 and est.high >= 0.8  # three scenarios: the scenario draw dominates
    assert clustered_bootstrap({}).mean is None


def test_clustered_bootstrap_custom_statistic_skips_undefined_resamples() -> None:
    def ratio(sample: dict[str, list[float]] | object) -> float | None:
        values = [x for v in sample.values() for x in v]  # type: ignore[attr-defined]
        return None if sum(values) == 0 else 1 / sum(values)

    est = clustered_bootstrap({"a": [0.0, 1.0], "b": [0.0]}, statistic=ratio, seed=0)  # type: ignore[arg-type]
    assert est.mean == 1.0


def test_minimum_detectable_difference_shrinks_with_more_scenarios() -> None:
    few = min_detectable_difference({f"s{i}": [1.0, 0.0] for i in range(2)})
    many = min_detectable_difference({f"s{i}": [1.0, 0.0] for i in range(8)})
    assert few is not None and many is not None and many < few
    assert many < few / 1.5  # se ~ 1/sqrt(scenarios)
    assert min_detectable_difference({"only": [1.0, 0.0]}) is None


def test_sign_flip_weighs_the_size_of_each_difference() -> None:
    # 9 better / 3 worse / 4 tied: the sign test cannot admit it at 95% ...
    without = [0.0] * 9 + [1.0] * 3 + [1.0] * 4
    small = [1.0] * 9 + [0.0] * 3 + [1.0] * 4
    assert sign_test(without, small).p_value > 0.05
    # ... and with the same signs and sizes of one, neither can the sign-flip test (same ordering)
    assert sign_flip_test(without, small).p_value > 0.05
    # wins of two items against losses of one: the sizes carry it over
    big = [2.0] * 4 + [1.0] * 5 + [0.0] * 3 + [1.0] * 4
    flip = sign_flip_test(without, big)
    assert flip.method == "sign-flip" and (flip.wins, flip.losses, flip.ties) == (9, 3, 4)
    assert flip.p_value == pytest.approx(129 / 4096)
    assert sign_test(without, big).p_value > 0.05


def test_sign_flip_exact_small_cases_and_floor() -> None:
    assert sign_flip_test([0] * 5, [1] * 5).p_value == pytest.approx(1 / 32)  # all five in favour: 0.5**5
    assert sign_flip_test([0] * 4, [3] * 4).p_value == pytest.approx(1 / 16)  # size cannot beat the floor
    assert sign_flip_test([1, 1], [1, 1]).p_value == 1.0
    assert sign_flip_test([], []).pairs == 0
    assert sign_flip_test([1, 0], [0, 1]).p_value == pytest.approx(3 / 4)  # +1 and -1: sums 2, 0, 0, -2
    with pytest.raises(ValueError, match="differ in length"):
        sign_flip_test([1], [1, 2])


def test_sign_flip_samples_when_the_sums_are_too_many() -> None:
    without = [0.0] * 40
    with_ = [1.0 + i / 997 for i in range(40)]  # 40 distinct sizes: 2^40 sums, so it samples
    flip = sign_flip_test(without, with_)
    assert 0 < flip.p_value < 1e-4
