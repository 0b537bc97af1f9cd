"""When scheduled runs happen: an interval (`schedule.every`) or a 5-field cron expression
(`schedule.cron`) read by croniter on the wall clock of the machine's time zone; and the same
schedule for Airflow's DAG.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from tlpipe.components.config import PipelineConfig
from tlpipe.components.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleError(UsageError):
    """A bad interval or cron expression."""


def parse_every(text: str) -> float:
    """'90s', '30m', '6h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise ScheduleError(f"schedule interval must look like 30m, 6h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def system_zone() -> dt.tzinfo:
    """The machine's time zone, with its daylight-saving rules: TZ when set (an IANA name such
    as Europe/Paris), else /etc/localtime; a fixed offset only when neither can be read."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return dt.datetime.now().astimezone().tzinfo


class Cron:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week) read by
    croniter on the wall clock of one time zone (default: the machine's, see system_zone).
    Day-of-month and day-of-week are OR-ed when both are set, and a field starting with '*'
    does not restrict the day, as in Vixie cron (croniter's implement_cron_bug)."""

    def __init__(self, expression: str, zone: dt.tzinfo | None = None):
        fields = (expression or "").split()
        if len(fields) != 5:  # croniter also takes 6 or 7 (seconds, years): not cron's syntax
            raise ScheduleError(f"cron expression needs 5 fields (minute hour day month "
                                f"weekday), got {expression!r}")
        if not croniter.is_valid(expression):
            raise ScheduleError(f"bad cron expression {expression!r} (a field is out of range "
                                f"or not a number, list, range or step)")
        self.expression, self.zone = expression, zone or system_zone()

    def next_time(self, now: float) -> float:
        """The first matching minute strictly after `now` (epoch seconds). A wall time skipped
        by a daylight-saving change runs an hour later; a repeated one runs once."""
        wall = dt.datetime.fromtimestamp(now, self.zone).replace(tzinfo=None)
        times = croniter(self.expression, wall, implement_cron_bug=True)
        try:
            while True:  # at most twice: past the first pass of a repeated hour
                when = times.get_next(dt.datetime).replace(tzinfo=self.zone).timestamp()
                if when > now:
                    return when
        except CroniterBadDateError:
            raise ScheduleError(f"cron expression {self.expression!r} never matches") from None


def next_tick(every: str | None, cron: str | None, zone: dt.tzinfo | None = None
              ) -> Callable[[float, float], float]:
    """A function (previous tick's planned time, now) -> the next tick's time (epoch seconds).

    An interval keeps its grid from the first tick: a run that overruns skips the slots it
    covered rather than starting runs back to back.
    """
    if cron:
        schedule = Cron(cron, zone)
        schedule.next_time(time.time())  # one that never matches fails here
        return lambda _previous, now: schedule.next_time(now)
    seconds = parse_every(every)

    def after(previous: float, now: float) -> float:
        missed = max(0, int((now - previous) // seconds))
        return previous + (missed + 1) * seconds
    return after


def airflow_schedule_interval(config: PipelineConfig):
    """`schedule.cron`, else `schedule.every` as a timedelta: what Airflow's DAG takes."""
    if config.schedule.cron:
        Cron(config.schedule.cron).next_time(time.time())  # checked here, not at the first run
        return config.schedule.cron
    return dt.timedelta(seconds=parse_every(config.schedule.every))
