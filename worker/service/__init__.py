"""Service: the scheduler, the HTTP server and shutdown, around the pipeline."""

__all__ = ["FINISHED"]

# The states of a requested run (POST /runs) after which it changes no more.
FINISHED = ("ok", "failed", "cancelled")
