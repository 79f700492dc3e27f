"""Service: the scheduler, the HTTP server and shutdown, around the pipeline."""

__all__: list[str] = []
