"""A trivial RQ task for bench/queue_overhead.py: it only reports when it ran."""

import time


def stamp() -> float:
    """Return the wall-clock time at which the work horse ran the job."""
    return time.time()
