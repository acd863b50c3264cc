"""Job schedules: cron expressions (and `every <N>s`) become beat schedules, bad ones fail at load."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.schedules import crontab
from pydantic import ValidationError

from schemas.settings import parse_schedule
from tests.conftest import make_settings
from workers.beat import beat_schedule
from workers.celery_app import make_celery
from workers.jobs import JOBS
from workers.queues import JOB_QUEUE


def test_the_default_is_nine_and_twenty_one_utc_every_day() -> None:
    schedule = parse_schedule(make_settings().luma_approval_schedule)

    assert isinstance(schedule, crontab)
    assert schedule.hour == {9, 21}
    assert schedule.minute == {0}
    assert schedule.day_of_week == set(range(7))


def test_every_field_of_a_cron_expression_is_kept() -> None:
    schedule = parse_schedule("30 6 1-7 */3 1-5")

    assert isinstance(schedule, crontab)
    assert (schedule.minute, schedule.hour) == ({30}, {6})
    assert schedule.day_of_month == set(range(1, 8))
    assert schedule.month_of_year == {1, 4, 7, 10}
    assert schedule.day_of_week == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("text", "seconds"), [("every 2s", 2), ("every 5m", 300), ("EVERY 1.5 h", 5400)]
)
def test_an_interval_form_is_accepted(text: str, seconds: float) -> None:
    assert parse_schedule(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0 9 * *", "neither a 5-field cron expression"),
        ("61 9 * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("every 0s", "must be positive"),
        ("twice a day", "neither a 5-field cron expression"),
    ],
)
def test_a_bad_schedule_is_refused_with_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_schedule(text)


def test_settings_refuse_a_bad_schedule_at_load() -> None:
    with pytest.raises(ValidationError, match="slack_sync_schedule"):
        make_settings(slack_sync_schedule="0 9,21 * *")


def test_beat_runs_each_job_on_its_schedule_on_the_jobs_queue() -> None:
    settings = make_settings(luma_approval_schedule="15 8 * * *", slack_sync_schedule="every 2s")

    schedule = beat_schedule(settings)

    assert set(JOBS) <= set(schedule)
    luma = schedule["luma-approval"]
    assert luma["task"] == JOBS["luma-approval"].task
    assert luma["schedule"].hour == {8}
    assert luma["kwargs"] == {"triggered_by": "beat"}
    assert luma["options"] == {"queue": JOB_QUEUE}
    assert schedule["slack-sync"]["schedule"] == timedelta(seconds=2)
    # The housekeeping sweeps are still there.
    assert {"inbox-sweep", "deactivation-sweep"} <= set(schedule)


def test_job_tasks_are_routed_to_the_jobs_queue_however_they_are_sent() -> None:
    router = make_celery(make_settings()).amqp.router

    for spec in JOBS.values():
        assert router.route({}, spec.task)["queue"].name == JOB_QUEUE
