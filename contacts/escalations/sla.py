"""SLA arithmetic: business hours in a time zone, due times, and when an item turns at risk.

A policy counts either every minute (24/7) or only the minutes inside business hours, in the
account's own time zone and hours when it has them. Due times are computed once and stored,
so the SLA job and the queue read them from an index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contacts.core.errors import ConfigError, Invalid

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS_PATTERN = re.compile(
    r"^\s*(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?\s+"
    r"(\d{2}):(\d{2})-(\d{2}):(\d{2})\s*$")


@dataclass(frozen=True)
class BusinessHours:
    days: frozenset[int]  # 0 is Monday
    opens: time
    closes: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, spec: str, zone_name: str) -> BusinessHours:
        """`"mon-fri 09:00-17:00"` in a time zone such as `"Europe/Paris"`."""
        match = HOURS_PATTERN.match(spec.lower())
        if not match:
            raise Invalid(f"business hours {spec!r} are not like 'mon-fri 09:00-17:00'")
        first, last, open_h, open_m, close_h, close_m = match.groups()
        start, end = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days = frozenset(range(start, end + 1)) if start <= end else frozenset(
            [*range(start, 7), *range(0, end + 1)])
        try:
            opens, closes = time(int(open_h), int(open_m)), time(int(close_h), int(close_m))
        except ValueError:
            raise Invalid(f"business hours {spec!r} hold an impossible time") from None
        if opens >= closes:
            raise Invalid(f"business hours {spec!r} close before they open")
        return cls(days, opens, closes, zone(zone_name))

    def _windows(self, moment: datetime):
        """The open intervals (UTC) from the day of `moment` on."""
        day: date = moment.astimezone(self.zone).date()
        while True:
            if day.weekday() in self.days:
                yield (datetime.combine(day, self.opens, self.zone).astimezone(UTC),
                       datetime.combine(day, self.closes, self.zone).astimezone(UTC))
            day += timedelta(days=1)

    def add(self, start: datetime, minutes: float) -> datetime:
        """The moment `minutes` of business time after `start`."""
        left = timedelta(minutes=minutes)
        for opens, closes in self._windows(start):
            if closes <= start:
                continue
            begin = max(opens, start)
            if begin + left <= closes:
                return begin + left
            left -= closes - begin
        raise AssertionError("unreachable: business hours have at least one open day")

    def minutes_between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        total = timedelta()
        for opens, closes in self._windows(start):
            if opens >= end:
                break
            begin, finish = max(opens, start), min(closes, end)
            if finish > begin:
                total += finish - begin
        return total.total_seconds() / 60


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"{name!r} is not a known time zone (for example Europe/Paris)") from None


@dataclass(frozen=True)
class Policy:
    """The targets of one priority, in minutes of policy time."""

    priority: int
    first_response_minutes: float
    resolution_minutes: float
    business_hours: bool


@dataclass(frozen=True)
class Clock:
    """How an item's time counts: every minute, or business minutes."""

    hours: BusinessHours | None  # None: 24/7

    def add(self, start: datetime, minutes: float) -> datetime:
        if self.hours is None:
            return start + timedelta(minutes=minutes)
        return self.hours.add(start, minutes)

    def minutes_between(self, start: datetime, end: datetime) -> float:
        if self.hours is None:
            return max(0.0, (end - start).total_seconds() / 60)
        return self.hours.minutes_between(start, end)


@dataclass(frozen=True)
class Targets:
    first_response_due: datetime
    first_response_risk_at: datetime
    resolution_due: datetime
    resolution_risk_at: datetime


def targets(policy: Policy, clock: Clock, start: datetime, at_risk_fraction: float,
            paused_minutes: float = 0.0) -> Targets:
    """Due times from `start`; an item is at risk once less than `at_risk_fraction` of a
    target is left. `paused_minutes` (waiting on the customer) push the resolution back."""
    used = 1 - at_risk_fraction
    return Targets(
        first_response_due=clock.add(start, policy.first_response_minutes),
        first_response_risk_at=clock.add(start, policy.first_response_minutes * used),
        resolution_due=clock.add(start, policy.resolution_minutes + paused_minutes),
        resolution_risk_at=clock.add(start, policy.resolution_minutes * used + paused_minutes))


def policies_from_settings(settings) -> dict[int, Policy]:
    first = settings.escalations_first_response_minutes
    resolution = settings.escalations_resolution_minutes
    hours = settings.escalations_sla_hours
    if not len(first) == len(resolution) == len(hours) == 4:
        raise ConfigError("escalations first_response_minutes, resolution_minutes and "
                          "sla_hours each need four values, for P1 to P4")
    policies = {}
    for index in range(4):
        if hours[index] not in ("24/7", "business"):
            raise ConfigError(f"escalations sla_hours[{index}] must be '24/7' or 'business', "
                              f"got {hours[index]!r}")
        try:
            policies[index + 1] = Policy(index + 1, float(first[index]),
                                         float(resolution[index]), hours[index] == "business")
        except (TypeError, ValueError):
            raise ConfigError(f"escalations SLA targets for P{index + 1} must be numbers of "
                              "minutes") from None
    return policies

