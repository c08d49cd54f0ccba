"""Progress reporting: a plain callable `(fraction 0-1, message)`, so core never knows who is watching."""

from collections.abc import Callable

ProgressFn = Callable[[float, str], None]


def span(progress: ProgressFn | None, start: float, end: float, label: str) -> ProgressFn:
    """A ProgressFn for one stage that maps its own 0-1 onto [start, end] of the parent and prefixes `label`."""

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(
                start + (end - start) * min(max(fraction, 0.0), 1.0),
                f"{label}: {message}" if message else label,
            )

    return report
