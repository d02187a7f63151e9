"""Follow-the-sun: the regions, their shift hours (UTC) and who is on shift at a moment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from contacts.core.errors import ConfigError

SHIFT_PATTERN = re.compile(
    r"^\s*([A-Za-z][A-Za-z0-9_]{0,15})\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})\s*$")
DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class Region:
    name: str
    starts: int  # minute of the UTC day the shift starts
    ends: int  # minute it ends (may be 1440)
    lead: str  # the region lead's email, or ""

    def covers(self, minute: int) -> bool:
        return self.starts <= minute < self.ends

    @property
    def hours(self) -> str:
        return (f"{self.starts // 60:02d}:{self.starts % 60:02d}-"
                f"{self.ends // 60:02d}:{self.ends % 60:02d} UTC")


@dataclass(frozen=True)
class Rota:
    """The regions in shift order; together they cover the UTC day once."""

    regions: tuple[Region, ...]

    @classmethod
    def parse(cls, specs: list[str], leads: list[str]) -> Rota:
        lead_of = {}
        for entry in leads:
            name, _, address = entry.partition("=")
            lead_of[name.strip()] = address.strip()
        regions = []
        for spec in specs:
            match = SHIFT_PATTERN.match(spec)
            if not match:
                raise ConfigError(f"escalations region {spec!r} is not like 'EMEA 08:00-16:00'")
            name, sh, sm, eh, em = match.groups()
            starts, ends = int(sh) * 60 + int(sm), int(eh) * 60 + int(em)
            if not 0 <= starts < ends <= DAY_MINUTES:
                raise ConfigError(f"escalations region {spec!r}: the shift must start before "
                                  "it ends, within one UTC day")
            regions.append(Region(name, starts, ends, lead_of.get(name, "")))
        regions.sort(key=lambda region: region.starts)
        position = 0
        for region in regions:
            if region.starts != position:
                raise ConfigError(f"escalations regions leave {position // 60:02d}:"
                                  f"{position % 60:02d} UTC uncovered or covered twice")
            position = region.ends
        if not regions or position != DAY_MINUTES:
            raise ConfigError("escalations regions must cover the whole UTC day")
        unknown = set(lead_of) - {region.name for region in regions}
        if unknown:
            raise ConfigError(f"escalations region_leads name unknown regions {sorted(unknown)}")
        return cls(tuple(regions))

    @property
    def names(self) -> list[str]:
        return [region.name for region in self.regions]

    def on_shift(self, now: datetime) -> Region:
        minute = now.hour * 60 + now.minute  # `now` is UTC
        return next(region for region in self.regions if region.covers(minute))

    def before(self, region: Region) -> Region:
        index = self.regions.index(region)
        return self.regions[index - 1]

    def get(self, name: str) -> Region | None:
        return next((region for region in self.regions if region.name == name), None)
