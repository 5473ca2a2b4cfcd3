"""Schedules: nightly alignment and periodic corpus refresh."""

SCHEDULES: list = []

# --- weekly corpus refresh (issue 3) --------------------------------------------------------------
import dagster as dg  # noqa: E402

from rar_pipeline.jobs import corpus_refresh_job  # noqa: E402

weekly_corpus_refresh = dg.ScheduleDefinition(
    name="weekly_corpus_refresh",
    job=corpus_refresh_job,
    cron_schedule="0 3 * * 0",  # Sundays 03:00 UTC; incremental, so a quiet week costs little
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly: re-fetch the sources, rebuild movie_corpus, embed only new or changed films.",
)
SCHEDULES.append(weekly_corpus_refresh)
