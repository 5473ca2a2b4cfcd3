"""Sensors: the new-release sensor that refreshes only what changed upstream."""

SENSORS: list = []
