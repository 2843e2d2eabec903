"""The flex availability model (issue 13, item 1) and the adaptive decision (item 2), as pure
functions of what was observed, with an injected clock."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from flexroute.errors import RequestRejected
from flexroute.routing.adaptive import FlexMode, Policy, Probes, flex_mode, plan
from flexroute.routing.advisor import Advisor
from flexroute.routing.availability import Availability, Summary

KEY = ("openai", "gpt-5-mini", "default")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def refusing(model: Availability, attempts: int = 5, retry_after: float | None = None) -> None:
    """Flex refusing everything: a request's first attempt refused, and its retries."""
    for number in range(attempts):
        model.refused(KEY, retry_after, retry=number > 0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model(clock: Clock) -> Availability:
    """A model whose weights fade with time only (a memory too long to matter)."""
    return Availability(half_life=10.0, memory=1e9, min_observations=3.0, clock=clock)


class TestEstimate:
    def test_unknown_until_enough_observations(self, model: Availability) -> None:
        """With fewer than min_observations the estimate is unknown (None), not 0 or 1."""
        refusing(model, 2)
        assert model.estimate(KEY, 2.0).p is None
        model.refused(KEY, None, retry=True)
        assert model.estimate(KEY, 2.0).p == 0.0

    def test_share_of_starts_within_the_wait(self, model: Availability) -> None:
        """P(start within t) counts the starts at or before t among all observations."""
        for after in (0.1, 0.1, 0.4, 3.0):
            model.started(KEY, after)
        assert model.estimate(KEY, 0.2).p == pytest.approx(0.5)
        assert model.estimate(KEY, 5.0).p == pytest.approx(1.0)

    def test_refusals_count_against_a_wait_by_what_retries_cannot_make_up(
        self, model: Availability
    ) -> None:
        """Half the first attempts and half the retries refused with Retry-After 1 s: a
        request with less than 1 s has one attempt (P 0.5); with 1.5 s it also has the retry
        (0.5 + 0.5 × 0.5); with a minute, retries all but make up for the refusals."""
        model.started(KEY, 0.1)
        model.refused(KEY, 1.0)
        model.started(KEY, 0.1, retry=True)
        model.refused(KEY, 1.0, retry=True)
        assert model.estimate(KEY, 0.5).p == pytest.approx(0.5)
        assert model.estimate(KEY, 1.5).p == pytest.approx(0.75)
        assert model.estimate(KEY, 60.0).p == pytest.approx(1.0, abs=1e-3)

    def test_flex_refusing_everything_is_down_for_any_budget(self, model: Availability) -> None:
        """Every attempt refused (the Retry-After short): no number of retries starts one."""
        refusing(model, 5, 0.1)
        assert model.estimate(KEY, 60.0).p == 0.0

    def test_a_refusal_without_retry_after_is_retried_after_the_backoff(
        self, model: Availability
    ) -> None:
        """No Retry-After: the retry comes after the backoff's first wait (0.375 s on
        average), so 0.5 s holds one retry and 0.3 s none."""
        model.started(KEY, 0.05)
        model.refused(KEY, None)
        model.started(KEY, 0.05, retry=True)
        model.refused(KEY, None, retry=True)
        assert model.estimate(KEY, 0.3).p == pytest.approx(0.5)
        assert model.estimate(KEY, 0.5).p == pytest.approx(0.75)

    def test_refusals_whose_retries_are_refused_too_count_as_never_starting(
        self, model: Availability
    ) -> None:
        """Where every retry of a refused request is refused as well, a refusal is a request
        that does not start, however long its budget: P is the first attempts' start share.
        Before any retry is seen, a retry is taken to be refused half the time."""
        for _ in range(2):
            model.started(KEY, 0.1)
            model.refused(KEY, 0.2)
        assert model.estimate(KEY, 60.0).p == pytest.approx(1.0, abs=1e-3)
        assert model.estimate(KEY, 0.1).p == pytest.approx(0.5)
        for _ in range(3):
            model.refused(KEY, 0.2, retry=True)
        assert model.estimate(KEY, 60.0).p == pytest.approx(0.5)

    def test_a_cut_says_nothing_beyond_its_wait(self, model: Availability) -> None:
        """An attempt cut after 0.5 s counts against waits up to 0.5 s, not against 4 s."""
        for _ in range(3):
            model.started(KEY, 0.1)
            model.cut(KEY, 0.5)
        assert model.estimate(KEY, 0.5).p == pytest.approx(0.5)
        assert model.estimate(KEY, 4.0).observations == pytest.approx(3.0)
        assert model.estimate(KEY, 4.0).p == pytest.approx(1.0)

    def test_old_observations_fade_with_the_half_life(
        self, model: Availability, clock: Clock
    ) -> None:
        """After one half-life an old observation counts half against a new one (read for a
        wait shorter than the backoff, so that no retry changes what the weights say)."""
        for _ in range(4):
            model.refused(KEY, None)
        clock.now += 10.0
        for _ in range(4):
            model.started(KEY, 0.1)
        estimate = model.estimate(KEY, 0.3)
        assert estimate.observations == pytest.approx(6.0)
        assert estimate.p == pytest.approx(4 / 6)

    def test_each_observation_discounts_the_older_ones(self, clock: Clock) -> None:
        """With a memory of 4, four refusals after many starts already pull P below 1/2."""
        model = Availability(half_life=1e9, memory=4.0, clock=clock)
        for _ in range(50):
            model.started(KEY, 0.1)
        for _ in range(4):
            model.refused(KEY, None)
        estimate = model.estimate(KEY, 0.3)
        assert estimate.observations == pytest.approx(4.0, abs=0.01)
        assert estimate.p == pytest.approx(0.75**4, abs=0.01)

    def test_a_probe_that_starts_forgets_the_outage(self, model: Availability) -> None:
        """recovered() drops the refusals and cuts, keeps the starts."""
        model.started(KEY, 0.1)
        for _ in range(5):
            model.refused(KEY, 3.0)
            model.cut(KEY, 2.0)
        model.recovered(KEY)
        model.started(KEY, 0.1)
        model.started(KEY, 0.1)
        estimate = model.estimate(KEY, 1.0)
        assert estimate.p == pytest.approx(1.0)
        assert not estimate.refusing(model.clock())

    def test_attempts_sent_before_a_recovery_do_not_bring_the_outage_back(
        self, clock: Clock
    ) -> None:
        """An attempt cut 4 s after it was sent, 1 s after a probe saw flex start again, is
        evidence about the outage that ended: ignored. One sent after the recovery counts."""
        model = Availability(half_life=1e9, memory=1e9, min_observations=1.0, clock=clock)
        model.started(KEY, 0.1)
        for _ in range(5):
            model.refused(KEY, None)
        clock.now += 3.0
        model.recovered(KEY)
        model.started(KEY, 0.1)
        clock.now += 1.0
        model.cut(KEY, 4.0)  # sent 3 s before the recovery
        assert model.estimate(KEY, 4.0).p == pytest.approx(1.0)
        model.cut(KEY, 0.5)  # sent after it
        assert model.estimate(KEY, 0.5).p == pytest.approx(2 / 3, abs=0.01)

    def test_retry_after_marks_flex_refusing_until_then(
        self, model: Availability, clock: Clock
    ) -> None:
        """A refusal's Retry-After is remembered as the moment flex may take attempts again."""
        model.refused(KEY, 2.5)
        assert model.estimate(KEY, 1.0).refusing(clock.now)
        clock.now += 3.0
        assert not model.estimate(KEY, 1.0).refusing(clock.now)

    def test_the_tail_is_where_the_starts_end(self, clock: Clock) -> None:
        """The tail is the bucket edge by which 98% of the starts had happened, read from
        start times that refusals do not discount."""
        model = Availability(memory=2.0, clock=clock)
        for _ in range(60):
            model.started(KEY, 0.08)
        for _ in range(20):
            model.refused(KEY, None)
        estimate = model.estimate(KEY, 2.0)
        assert estimate.tail == 0.1
        assert estimate.starts == pytest.approx(60.0, abs=0.5)

    def test_peers_are_merged_on_read(self, model: Availability, clock: Clock) -> None:
        """Another process's summary adds its observations, decayed to the same moment."""
        peer = Availability(half_life=10.0, memory=1e9, clock=lambda: clock.now - 10.0)
        for _ in range(4):
            peer.refused(KEY, None)
        shared = {key: [Summary.from_json(s.to_json())] for key, s in peer.own().items()}
        model.peers = lambda: shared
        model.started(KEY, 0.1)
        model.started(KEY, 0.1)
        assert model.estimate(KEY, 0.3).p == pytest.approx(0.5)

    def test_a_malformed_summary_is_refused(self) -> None:
        """A summary of another grid or with negative weights raises instead of merging."""
        good = Summary(0.0).to_json()
        with pytest.raises(ValueError, match="grid"):
            Summary.from_json({**good, "starts": [1.0]})
        with pytest.raises(ValueError, match="non-negative"):
            Summary.from_json({**good, "refusals": -1})
        with pytest.raises(ValueError, match="finite"):
            Summary.from_json({**good, "recovered_at": float("nan")})


def estimate_for(model: Availability, within: float) -> object:
    return model.estimate(KEY, within)


class TestPlan:
    def test_unknown_goes_to_flex_with_the_whole_budget(self, model: Availability) -> None:
        """Nothing known: flex as today, the whole remaining budget."""
        chosen = plan(model.estimate(KEY, 2.0), 2.0, FlexMode.ADAPTIVE, Policy(), probe=False)
        assert (chosen.budget, chosen.reason, chosen.p) == (2.0, None, None)

    def test_predicted_down_skips_flex(self, model: Availability) -> None:
        """Below the threshold flex is skipped, reason flex-predicted-unavailable."""
        refusing(model)
        chosen = plan(model.estimate(KEY, 2.0), 2.0, FlexMode.ADAPTIVE, Policy(), probe=False)
        assert chosen.skip
        assert str(chosen.reason) == "flex-predicted-unavailable"
        assert chosen.p == 0.0

    def test_always_never_skips_or_shortens(self, model: Availability) -> None:
        """x-flex-mode: always spends the whole budget whatever the model says."""
        refusing(model)
        chosen = plan(model.estimate(KEY, 2.0), 2.0, FlexMode.ALWAYS, Policy(), probe=False)
        assert (chosen.budget, chosen.reason, chosen.skip) == (2.0, None, False)

    def test_a_probe_tries_flex_while_predicted_down(self, model: Availability) -> None:
        """A request the probe budget allows tries flex although flex is predicted down."""
        refusing(model)
        chosen = plan(model.estimate(KEY, 2.0), 2.0, FlexMode.ADAPTIVE, Policy(), probe=True)
        assert chosen.probe
        assert not chosen.skip
        assert chosen.budget == 2.0

    def test_no_hope_left_shortens_the_budget(self, model: Availability) -> None:
        """Starts within 0.1 s and cuts at 4 s: an attempt not started by 0.1 s will not start
        by 4 s either, so the budget is cut to 0.1 s."""
        for _ in range(8):
            model.started(KEY, 0.08)
        for _ in range(2):
            model.cut(KEY, 4.0)
        policy = Policy(threshold=0.2, hope=0.2, min_starts=3)
        chosen = plan(model.estimate(KEY, 4.0), 4.0, FlexMode.ADAPTIVE, policy, probe=False)
        assert chosen.budget == pytest.approx(0.1)
        assert str(chosen.reason) == "flex-budget-shortened"
        assert chosen.p == pytest.approx(0.8)

    def test_late_starts_keep_the_whole_budget(self, model: Availability) -> None:
        """Starts spread over the budget leave hope until its end: no shortening."""
        for after in (0.1, 0.5, 1.0, 1.5, 1.9):
            model.started(KEY, after)
        chosen = plan(model.estimate(KEY, 2.0), 2.0, FlexMode.ADAPTIVE, Policy(), probe=False)
        assert (chosen.budget, chosen.reason) == (2.0, None)

    def test_never_more_than_the_remaining_budget(self, model: Availability) -> None:
        """A tail beyond the remaining budget leaves the budget as it is."""
        for _ in range(20):
            model.started(KEY, 3.0)
        chosen = plan(model.estimate(KEY, 1.0), 1.0, FlexMode.ADAPTIVE, Policy(), probe=False)
        assert chosen.budget <= 1.0


class TestProbes:
    def test_at_most_one_in_every_and_one_per_interval(self, clock: Clock) -> None:
        """Probes come at most once per interval and once in `every` predicted-down requests."""
        model = Availability(memory=1e9, clock=clock)
        refusing(model)
        advisor = Advisor(model, Probes(interval=1.0, every=4, clock=clock), Policy())
        kinds = []
        for _ in range(12):
            clock.now += 0.5
            kinds.append(advisor.plan(KEY, 2.0, FlexMode.ADAPTIVE).decision)
        assert kinds.count("probe") == 3
        assert kinds[:3] == ["skipped"] * 3
        assert kinds[3] == "probe"
        assert advisor.probes.counts(KEY) == (3, 9)

    def test_no_probe_while_retry_after_is_pending(self, clock: Clock) -> None:
        """A probe would be refused before the provider's Retry-After ends: none is sent."""
        model = Availability(half_life=300.0, memory=1e9, clock=clock)
        refusing(model, 5, 30.0)
        advisor = Advisor(model, Probes(interval=0.0, every=1, clock=clock), Policy())
        assert advisor.plan(KEY, 2.0, FlexMode.ADAPTIVE).decision == "skipped"
        clock.now += 31.0
        assert advisor.plan(KEY, 2.0, FlexMode.ADAPTIVE).decision == "probe"


class TestFlexMode:
    def test_header_wins_over_the_default(self) -> None:
        """x-flex-mode picks the mode; without it the operator's default applies."""
        assert flex_mode("always", FlexMode.ADAPTIVE) is FlexMode.ALWAYS
        assert flex_mode(None, FlexMode.ALWAYS) is FlexMode.ALWAYS

    def test_a_bad_value_is_a_400_naming_header_value_and_choices(self) -> None:
        """An unknown mode is refused with the header, the value and the allowed values."""
        with pytest.raises(RequestRejected) as caught:
            flex_mode("sometimes", FlexMode.ADAPTIVE)
        message = str(caught.value)
        assert caught.value.status == 400
        assert "x-flex-mode" in message
        assert "'sometimes'" in message
        assert "'adaptive'" in message
        assert "'always'" in message


class TestReview:
    """A request waiting on flex is planned again at each refusal of its model: once refused
    itself, from its retries only."""

    @pytest.fixture
    def advisor(self, clock: Clock) -> Advisor:
        model = Availability(half_life=1e9, memory=1e9, min_observations=2.0, clock=clock)
        return Advisor(model, Probes(interval=1e9, every=10**6, clock=clock), Policy())

    def waits_after_its_refusal(self, advisor: Advisor) -> bool:
        """A new request for 4 s, planned, goes to flex and is refused, then its retry too:
        does it wait on (after the first refusal it always does)?"""
        chosen = advisor.plan(KEY, 4.0, FlexMode.ADAPTIVE)
        assert not chosen.skip
        follow, stopped = advisor.follow(KEY, chosen), []
        with follow.hold(lambda: stopped.append(True)):
            follow("refused", 0.01, 0.1)
            assert not stopped
            follow("refused", 0.01, 0.1)
        return not stopped

    def test_it_stops_at_its_refusal_where_retries_are_refused_too(self, advisor: Advisor) -> None:
        """Half the first attempts start (a new request's P is 0.5: it tries), but every
        refused request's retries were refused: once refused, it has no chance left."""
        for _ in range(4):
            advisor.availability.started(KEY, 0.1)
            refusing(advisor.availability, 3, 0.1)
        assert not self.waits_after_its_refusal(advisor)

    def test_it_waits_for_its_retry_where_retries_get_through(self, advisor: Advisor) -> None:
        """Every first attempt refused, three retries in four started: a wave the retries get
        through."""
        for number in range(4):
            advisor.availability.refused(KEY, 0.1)
            if number:
                advisor.availability.started(KEY, 0.1, retry=True)
            else:
                advisor.availability.refused(KEY, 0.1, retry=True)
                advisor.availability.started(KEY, 0.1, retry=True)
        assert self.waits_after_its_refusal(advisor)

    def test_accepted_attempts_waiting_long_past_the_tail_count_as_not_starting(
        self, advisor: Advisor, clock: Clock
    ) -> None:
        """Starts came within 0.1 s; ten attempts accepted 1.5 s ago still wait for their
        first output: flex takes attempts and does not start them, and a new request is
        skipped before any of them is cut at its deadline."""
        for _ in range(2):
            advisor.availability.started(KEY, 0.05)
        with ExitStack() as held:
            for _ in range(10):
                follow = advisor.follow(KEY, advisor.plan(KEY, 4.0, FlexMode.ADAPTIVE))
                held.enter_context(follow.hold(lambda: None))
                follow("accepted", 0.01, None)
            clock.now += 0.5  # within the overdue limit (1 s here)
            assert advisor.plan(KEY, 4.0, FlexMode.ADAPTIVE).decision == "flex"
            clock.now += 1.0
            assert advisor.plan(KEY, 4.0, FlexMode.ADAPTIVE).decision == "skipped"
            assert advisor.status(4.0)[0]["overdue"] == 10
        assert advisor.status(4.0)[0]["overdue"] == 0  # they ended
