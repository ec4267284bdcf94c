"""The webhook retry schedule: exponential waits with jitter, 12 attempts at most, never past 3 days."""

from datetime import UTC, datetime, timedelta

from chalicelib import webhook_delivery
from chalicelib.webhook_delivery import GIVE_UP_AFTER_S, RETRY_SCHEDULE_S, next_attempt_at

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def _attempt_times() -> list[datetime]:
    """When a delivery that never succeeds is tried, from its first attempt at T0 to the schedule's end."""
    times, at = [T0], T0
    while (at := next_attempt_at(len(times), T0, at)) is not None:
        times.append(at)
    return times


def test_a_delivery_that_always_fails_is_tried_at_most_12_times_within_3_days():
    for _ in range(200):
        times = _attempt_times()
        assert 10 <= len(times) <= len(RETRY_SCHEDULE_S) + 1 == 12
        assert times[-1] - T0 <= timedelta(seconds=GIVE_UP_AFTER_S)
        assert times[-1] - T0 > timedelta(days=2)  # it keeps trying for most of the 3 days


def test_waits_grow_from_seconds_to_hours_with_at_most_20_percent_jitter():
    for failures, wait in enumerate(RETRY_SCHEDULE_S, start=1):
        at = next_attempt_at(failures, T0, T0)
        assert at is not None
        assert 0.8 * wait <= (at - T0).total_seconds() <= 1.2 * wait
    assert RETRY_SCHEDULE_S[0] == 5 and RETRY_SCHEDULE_S[-1] == 36000
    assert list(RETRY_SCHEDULE_S) == sorted(RETRY_SCHEDULE_S)


def test_a_time_scale_compresses_the_whole_schedule():
    at = next_attempt_at(4, T0, T0, scale=0.001)  # 2 hours become about 7 seconds
    assert timedelta(seconds=5.7) <= at - T0 <= timedelta(seconds=8.7)
    assert next_attempt_at(3, T0, T0 + timedelta(seconds=259.2), scale=0.001) is None  # 3 days have passed


def test_each_signing_secret_signs_the_id_timestamp_and_body():
    headers = webhook_delivery.sign(("whsec_" + "A" * 32, "whsec_" + "B" * 32), "evt-1", T0, "{}")

    assert headers["webhook-id"] == "evt-1" and headers["webhook-timestamp"] == str(int(T0.timestamp()))
    first, second = headers["webhook-signature"].split(" ")
    assert first.startswith("v1,") and second.startswith("v1,") and first != second
