"""Progress reporting: a plain callable `(fraction 0-1, message)`, so core never knows who is watching; and the
run context that carries it through a job's stages with the cancel check and stage timings."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import JobCancelled

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


@dataclass(frozen=True)
class TilingOptions:
    """How a model pass tiles the grid: tiles per model call, and overlap between tiles in model pixels."""

    batch_size: int = 4
    overlap_px: int = 32


@dataclass
class RunContext:
    """What travels with a job through its stages: where its work goes, who watches its progress, whether it
    should stop, and how long each stage took."""

    work_dir: Path
    progress: ProgressFn | None = None
    should_stop: Callable[[], bool] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def check_cancelled(self) -> None:
        """Raise JobCancelled when the job was asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled("The job was cancelled.")

    def report(self, fraction: float, message: str) -> None:
        """Report progress (0-1 of this context's share), if anyone watches."""
        if self.progress is not None:
            self.progress(fraction, message)

    def within(self, start: float, end: float, label: str, work_dir: Path | None = None) -> "RunContext":
        """A context for one part of this one: its progress is [start, end] of ours with `label` prefixed, its
        work goes to `work_dir` (default: ours); cancel and timings are shared."""
        return RunContext(
            work_dir if work_dir is not None else self.work_dir,
            span(self.progress, start, end, label),
            self.should_stop,
            self.timings_s,
        )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (wall-clock seconds, kept in `timings_s` for the run record)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(time.perf_counter() - started, 3)
