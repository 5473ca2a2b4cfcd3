"""Schedules: nightly alignment and periodic corpus refresh."""

SCHEDULES: list = []
