"""The drain's pacer: AIMD on the replay rate, driven by the store delay a point read meets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regionstore_recovery.pacing import DrainPacer, PacingSettings, WindowMin
from regionstore_recovery.settings import RecoverySettings

SETTINGS = PacingSettings(
    target_delay_s=0.05,
    base_window_s=60.0,
    # Every read counts on its own here; TestCurrentFilter has the default's filtering.
    filter_samples=1,
    initial_rate=1000.0,
    min_rate=100.0,
    max_rate=3000.0,
    increase_per_s=200.0,
    decrease_factor=0.5,
    # The additive climb on its own; TestSlowStart has the default's doubling.
    slow_start=False,
)
# What a point read takes on an idle store in these tests.
BASE_S = 0.02


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch(
    pacer: DrainPacer,
    clock: Clock,
    *,
    count: int = 250,
    probe_s: float = BASE_S,
    store_s: float = 0.01,
) -> float:
    """One batch that spends ``store_s`` in the store while a point read takes ``probe_s``;
    the wait the pacer asks for, waited."""
    pacer.started()
    clock.now += store_s
    wait = pacer.applied(count, probe_s)
    clock.now += wait
    return wait


def pacer_with(settings: PacingSettings = SETTINGS) -> tuple[DrainPacer, Clock]:
    clock = Clock()
    return DrainPacer(settings, clock=clock), clock


class TestAdditiveIncrease:
    def test_batches_within_the_target_add_the_step_per_second(self) -> None:
        pacer, clock = pacer_with()
        answered = []
        for _ in range(5):
            pacer.started()
            clock.now += 0.01
            answered.append(clock.now)
            clock.now += pacer.applied(250, BASE_S + 0.04)
        # The first answer only starts the clock: the step counts from it to the last one.
        climbed = SETTINGS.increase_per_s * (answered[-1] - answered[0])
        assert climbed > 150.0
        assert pacer.rate == pytest.approx(SETTINGS.initial_rate + climbed)

    def test_the_rate_climbs_with_time_not_with_batches(self) -> None:
        small, small_clock = pacer_with()
        large, large_clock = pacer_with()
        while small_clock.now < 110.0:
            batch(small, small_clock, count=50)
        while large_clock.now < 110.0:
            batch(large, large_clock, count=250)
        # Ten seconds each, however many batches: 2,000 more per second in both.
        assert small.rate == pytest.approx(large.rate, rel=0.05)
        assert small.rate == pytest.approx(3000.0, rel=0.05)

    def test_never_above_the_maximum(self) -> None:
        pacer, clock = pacer_with()
        while clock.now < 200.0:
            batch(pacer, clock)
        assert pacer.rate == SETTINGS.max_rate

    def test_a_long_idle_adds_at_most_one_second_of_steps(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock, count=10)
        clock.now += 3600.0
        batch(pacer, clock, count=10)
        assert pacer.rate == pytest.approx(SETTINGS.initial_rate + SETTINGS.increase_per_s)


class TestSlowStart:
    SETTINGS = SETTINGS.model_copy(update={"slow_start": True, "max_rate": 20_000.0})

    def test_the_rate_doubles_each_second_until_the_first_delay(self) -> None:
        pacer, clock = pacer_with(self.SETTINGS)
        pacer.started()
        clock.now += 0.001
        first = answered = clock.now
        clock.now += pacer.applied(100, BASE_S)
        while answered - first < 3.0:
            answered = clock.now + 0.001
            batch(pacer, clock, count=100, store_s=0.001)
        # The first answer only starts the clock: the doubling counts from it to the last one.
        doublings = answered - first
        assert doublings == pytest.approx(3.0, abs=0.05)
        assert pacer.rate == pytest.approx(SETTINGS.initial_rate * 2.0**doublings)

    def test_after_the_first_delay_the_climb_is_additive(self) -> None:
        pacer, clock = pacer_with(self.SETTINGS)
        batch(pacer, clock)
        pacer.started()
        clock.now += 0.01
        halved_at = answered = clock.now
        clock.now += pacer.applied(250, BASE_S + 0.2)
        halved = pacer.rate
        while answered - halved_at < 3.0:
            answered = clock.now + 0.001
            batch(pacer, clock, count=100, store_s=0.001)
        climbed = SETTINGS.increase_per_s * (answered - halved_at)
        assert pacer.rate == pytest.approx(halved + climbed)

    def test_a_drain_with_nothing_to_yield_to_reaches_its_maximum_within_seconds(self) -> None:
        pacer, clock = pacer_with(self.SETTINGS)
        while pacer.rate < self.SETTINGS.max_rate and clock.now < 110.0:
            batch(pacer, clock, count=250, store_s=0.001)
        # 1,000 to 20,000 is 4.3 doublings; the additive step would take 95 s.
        assert clock.now < 100.0 + 5.5


class TestMultiplicativeDecrease:
    def test_delay_over_the_target_halves_the_rate(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock, probe_s=BASE_S)
        batch(pacer, clock, probe_s=BASE_S + 0.06)
        assert pacer.rate == pytest.approx(500.0, rel=0.01)
        assert pacer.delay_s == pytest.approx(0.06)
        batch(pacer, clock, probe_s=BASE_S + 0.06)
        assert pacer.rate == pytest.approx(250.0, rel=0.01)

    def test_never_below_the_minimum(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock)
        for _ in range(20):
            batch(pacer, clock, probe_s=1.0)
        assert pacer.rate == SETTINGS.min_rate

    def test_a_slow_store_with_no_added_delay_is_not_a_reason_to_slow_down(self) -> None:
        # Point reads that always take 0.3 s (a slow host) are the base: no delay, full climb.
        pacer, clock = pacer_with()
        while clock.now < 200.0:
            batch(pacer, clock, probe_s=0.3)
        assert pacer.delay_s == 0.0
        assert pacer.rate == SETTINGS.max_rate

    def test_the_base_follows_a_store_that_became_slower_for_good(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock, probe_s=BASE_S)
        slowdowns_at = []
        while clock.now < 300.0:
            before = pacer.rate
            batch(pacer, clock, probe_s=0.2)
            if pacer.rate < before:
                slowdowns_at.append(clock.now)
        # Slowed while the fast reads were within the base window, then climbed again.
        assert slowdowns_at
        assert max(slowdowns_at) <= 100.0 + SETTINGS.base_window_s + 1.0
        assert pacer.rate == SETTINGS.max_rate

    def test_the_rate_saws_around_what_the_region_absorbs(self) -> None:
        # A synthetic region: live writes wait 0.1 s longer once the drain passes 1,500/s.
        pacer, clock = pacer_with()
        rates = []
        while clock.now < 160.0:
            probe_s = BASE_S if pacer.rate <= 1500.0 else BASE_S + 0.1
            batch(pacer, clock, probe_s=probe_s)
            rates.append(pacer.rate)
        late = rates[len(rates) // 2 :]
        assert max(late) <= 1500.0 + SETTINGS.increase_per_s
        assert min(late) >= 1500.0 * SETTINGS.decrease_factor - 1e-9
        assert sum(late) / len(late) > 1000.0


class TestCurrentFilter:
    SETTINGS = SETTINGS.model_copy(update={"filter_samples": 3})

    def test_one_slow_read_among_quick_ones_is_no_queue(self) -> None:
        pacer, clock = pacer_with(self.SETTINGS)
        for probe_s in (BASE_S, BASE_S, 1.0, BASE_S, 1.0):
            batch(pacer, clock, probe_s=probe_s)
            assert pacer.delay_s == 0.0
        assert pacer.rate > SETTINGS.initial_rate

    def test_slow_reads_in_a_row_are(self) -> None:
        pacer, clock = pacer_with(self.SETTINGS)
        batch(pacer, clock, probe_s=BASE_S)
        rates = []
        for _ in range(3):
            batch(pacer, clock, probe_s=BASE_S + 0.2)
            rates.append(pacer.rate)
        # The third slow read in a row is the first whose filter holds no quick one.
        assert rates[1] > rates[0] > SETTINGS.initial_rate
        assert pacer.delay_s == pytest.approx(0.2)
        assert rates[2] == pytest.approx(rates[1] / 2)


class TestWaits:
    def test_a_batch_is_spread_over_count_over_rate_seconds(self) -> None:
        pacer, clock = pacer_with()
        pacer.started()
        clock.now += 0.05
        assert pacer.applied(250, BASE_S) == pytest.approx(0.25 - 0.05)

    def test_no_wait_when_the_batch_took_longer_than_its_share(self) -> None:
        pacer, clock = pacer_with()
        pacer.started()
        clock.now += 0.5
        assert pacer.applied(250, BASE_S) == 0.0

    def test_a_slow_batch_saves_no_credit_for_the_next(self) -> None:
        pacer, clock = pacer_with(PacingSettings(increase_per_s=0.0, slow_start=False))
        batch(pacer, clock, store_s=1.0)
        # The next batch is paced from its own start: its full share, no burst.
        assert batch(pacer, clock, store_s=0.0) == pytest.approx(0.25)

    def test_the_pace_holds_over_many_batches(self) -> None:
        steady = PacingSettings(increase_per_s=0.0, initial_rate=500.0, slow_start=False)
        pacer, clock = pacer_with(steady)
        start = clock.now
        for _ in range(40):
            batch(pacer, clock, count=100, store_s=0.03)
        assert 4000 / (clock.now - start) == pytest.approx(500.0)


class TestWindowMin:
    def test_the_least_value_within_the_window(self) -> None:
        window = WindowMin(10.0)
        assert [window.add(t, v) for t, v in [(0, 5.0), (1, 3.0), (2, 4.0)]] == [5.0, 3.0, 3.0]

    def test_a_value_leaves_the_window_after_its_time(self) -> None:
        window = WindowMin(10.0)
        window.add(0, 1.0)
        window.add(5, 4.0)
        assert window.add(10, 6.0) == 1.0
        assert window.add(10.5, 6.0) == 4.0
        assert window.add(16, 7.0) == 6.0


class TestSettings:
    def test_defaults_keep_their_order(self) -> None:
        settings = PacingSettings()
        assert settings.enabled
        assert settings.min_rate <= settings.initial_rate <= settings.max_rate

    def test_the_start_must_lie_within_the_bounds(self) -> None:
        with pytest.raises(ValidationError, match="min_rate <= initial_rate <= max_rate"):
            PacingSettings(initial_rate=50.0, min_rate=100.0)

    @pytest.mark.parametrize("factor", [0.0, 1.0])
    def test_a_decrease_must_decrease(self, factor: float) -> None:
        with pytest.raises(ValidationError, match="decrease_factor"):
            PacingSettings(decrease_factor=factor)

    def test_the_environment_sets_them(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_PACING__ENABLED", "false")
        monkeypatch.setenv("REGIONSTORE_PACING__TARGET_DELAY_S", "0.2")
        pacing = RecoverySettings().pacing
        assert (pacing.enabled, pacing.target_delay_s) == (False, 0.2)
