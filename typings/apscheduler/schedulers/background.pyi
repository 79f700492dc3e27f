from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.base import BaseTrigger

class BackgroundScheduler:
    def __init__(
        self,
        *,
        timezone: tzinfo | str | None = None,
        job_defaults: Mapping[str, Any] | None = None,
        daemon: bool = True,
    ) -> None: ...
    @property
    def running(self) -> bool: ...
    def start(self, paused: bool = False) -> None: ...
    def shutdown(self, wait: bool = True) -> None: ...
    def add_job(
        self,
        func: Callable[..., object],
        trigger: BaseTrigger | str | None = None,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        id: str | None = None,
        name: str | None = None,
        misfire_grace_time: int | None = ...,
        coalesce: bool = ...,
        max_instances: int = ...,
        next_run_time: datetime | None = ...,
        jobstore: str = "default",
        executor: str = "default",
        replace_existing: bool = False,
    ) -> Job: ...
    def reschedule_job(
        self, job_id: str, jobstore: str | None = None, trigger: BaseTrigger | str | None = None
    ) -> Job: ...
    def get_job(self, job_id: str, jobstore: str | None = None) -> Job | None: ...
