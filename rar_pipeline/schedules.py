"""Schedules: nightly alignment and periodic corpus refresh."""

import dagster as dg

from rar_pipeline.jobs import corpus_refresh_job, nightly_alignment_job
from rar_pipeline.partitions import ALIGNMENT_ROUNDS, new_round_key

weekly_corpus_refresh = dg.ScheduleDefinition(
    name="weekly_corpus_refresh",
    job=corpus_refresh_job,
    cron_schedule="0 3 * * 0",  # Sundays 03:00 UTC; incremental, so a quiet week costs little
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly: re-fetch the sources, rebuild movie_corpus, embed only new or changed films.",
)


@dg.schedule(
    name="nightly_alignment",
    job=nightly_alignment_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: add an alignment round partition and run round -> promotion gate -> report.",
)
def nightly_alignment_schedule(context: dg.ScheduleEvaluationContext):
    round_key = new_round_key(context.scheduled_execution_time)
    context.instance.add_dynamic_partitions(ALIGNMENT_ROUNDS.name, [round_key])
    return dg.RunRequest(run_key=round_key, partition_key=round_key, tags={"rar/trigger": "nightly"})


SCHEDULES = [weekly_corpus_refresh, nightly_alignment_schedule]
