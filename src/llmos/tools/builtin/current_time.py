"""`current_time`: the date and time now, in a time zone the model names (default UTC)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from llmos.tools.builtin.base import Builtin, Env, done, failed
from llmos.tools.sandbox import SandboxResult


class CurrentTimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", max_length=64, description="IANA name, e.g. Europe/Paris")


async def run(args: CurrentTimeArgs, env: Env) -> SandboxResult:
    try:
        zone = ZoneInfo(args.timezone.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return failed(f"unknown time zone {args.timezone!r}; use an IANA name like Europe/Paris")
    now = datetime.now(zone)
    return done(f"{now:%A %Y-%m-%d %H:%M:%S} {now.tzname()} ({now.isoformat(timespec='seconds')})")


TOOL = Builtin(
    "current_time",
    "The current date, weekday and time in a time zone (default UTC).",
    CurrentTimeArgs,
    run,
)
