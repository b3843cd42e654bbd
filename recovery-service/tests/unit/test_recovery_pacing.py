"""The drain's pacer: AIMD on the replay rate, driven by the drain's own store round trips."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regionstore_recovery.pacing import DrainPacer, PacingSettings

SETTINGS = PacingSettings(
    target_latency_s=0.1,
    initial_rate=1000.0,
    min_rate=100.0,
    max_rate=3000.0,
    increase_per_s=200.0,
    decrease_factor=0.5,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch(pacer: DrainPacer, clock: Clock, *, count: int, store_s: float) -> float:
    """One batch that spends ``store_s`` in the store; the wait the pacer asks for, waited."""
    pacer.started()
    clock.now += store_s
    wait = pacer.applied(count)
    clock.now += wait
    return wait


def pacer_with(
    settings: PacingSettings = SETTINGS, *, chunk: int = 250
) -> tuple[DrainPacer, Clock]:
    clock = Clock()
    return DrainPacer(settings, chunk=chunk, clock=clock), clock


class TestAdditiveIncrease:
    def test_requests_within_the_target_add_the_step_per_second(self) -> None:
        pacer, clock = pacer_with()
        answered = []
        # 250 commands at about 1000/s: about 0.25 s a batch, 0.02 of it in the store.
        for _ in range(5):
            pacer.started()
            clock.now += 0.02
            answered.append(clock.now)
            clock.now += pacer.applied(250)
        # The first answer only starts the clock: the step counts from it to the last one.
        climbed = SETTINGS.increase_per_s * (answered[-1] - answered[0])
        assert climbed > 150.0
        assert pacer.rate == pytest.approx(SETTINGS.initial_rate + climbed)

    def test_the_rate_climbs_linearly_with_time_not_with_batches(self) -> None:
        small, small_clock = pacer_with()
        large, large_clock = pacer_with()
        while small_clock.now < 110.0:
            batch(small, small_clock, count=50, store_s=0.01)
        while large_clock.now < 110.0:
            batch(large, large_clock, count=250, store_s=0.01)
        # Ten seconds each, however many batches: about 2,000 more per second in both.
        assert small.rate == pytest.approx(large.rate, rel=0.05)
        assert small.rate == pytest.approx(3000.0, rel=0.05)

    def test_never_above_the_maximum(self) -> None:
        pacer, clock = pacer_with()
        while clock.now < 200.0:
            batch(pacer, clock, count=250, store_s=0.01)
        assert pacer.rate == SETTINGS.max_rate

    def test_a_long_idle_adds_at_most_one_second_of_steps(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock, count=10, store_s=0.01)
        clock.now += 3600.0
        batch(pacer, clock, count=10, store_s=0.01)
        assert pacer.rate == pytest.approx(SETTINGS.initial_rate + SETTINGS.increase_per_s)


class TestMultiplicativeDecrease:
    def test_a_request_over_the_target_halves_the_rate(self) -> None:
        pacer, clock = pacer_with()
        batch(pacer, clock, count=250, store_s=0.15)
        assert pacer.rate == 500.0
        batch(pacer, clock, count=250, store_s=0.15)
        assert pacer.rate == 250.0

    def test_never_below_the_minimum(self) -> None:
        pacer, clock = pacer_with()
        for _ in range(20):
            batch(pacer, clock, count=250, store_s=1.0)
        assert pacer.rate == SETTINGS.min_rate

    def test_latency_is_per_store_request_not_per_batch(self) -> None:
        # 1,000 commands are four requests of 250: 0.3 s in all is 0.075 s each, within 0.1.
        pacer, clock = pacer_with(chunk=250)
        batch(pacer, clock, count=1000, store_s=0.3)
        assert pacer.rate == SETTINGS.initial_rate
        batch(pacer, clock, count=250, store_s=0.3)
        assert pacer.rate == 500.0

    def test_the_rate_saws_around_what_the_store_absorbs(self) -> None:
        # A synthetic store: requests are fast below 1,500 commands/s and slow above it.
        pacer, clock = pacer_with()
        rates = []
        while clock.now < 160.0:
            store_s = 0.02 if pacer.rate <= 1500.0 else 0.2
            batch(pacer, clock, count=250, store_s=store_s)
            rates.append(pacer.rate)
        late = rates[len(rates) // 2 :]
        assert max(late) <= 1500.0 + SETTINGS.increase_per_s
        assert min(late) >= 1500.0 * SETTINGS.decrease_factor - 1e-9
        assert sum(late) / len(late) > 1000.0


class TestWaits:
    def test_a_batch_is_spread_over_count_over_rate_seconds(self) -> None:
        pacer, clock = pacer_with()
        pacer.started()
        clock.now += 0.05
        assert pacer.applied(250) == pytest.approx(0.25 - 0.05)

    def test_no_wait_when_the_batch_took_longer_than_its_share(self) -> None:
        pacer, clock = pacer_with(PacingSettings(target_latency_s=10.0))
        pacer.started()
        clock.now += 0.5
        assert pacer.applied(250) == 0.0

    def test_a_slow_batch_saves_no_credit_for_the_next(self) -> None:
        pacer, clock = pacer_with(PacingSettings(target_latency_s=10.0, increase_per_s=0.0))
        batch(pacer, clock, count=250, store_s=1.0)
        # The next batch is paced from its own start: its full share, no burst.
        assert batch(pacer, clock, count=250, store_s=0.0) == pytest.approx(0.25)

    def test_the_pace_holds_over_many_batches(self) -> None:
        settings = PacingSettings(target_latency_s=10.0, increase_per_s=0.0, initial_rate=500.0)
        pacer, clock = pacer_with(settings)
        start = clock.now
        for _ in range(40):
            batch(pacer, clock, count=100, store_s=0.03)
        assert 4000 / (clock.now - start) == pytest.approx(500.0)


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
