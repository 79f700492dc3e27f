from datetime import datetime

class Job:
    id: str
    name: str
    next_run_time: datetime | None
