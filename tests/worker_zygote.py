"""`terraseg worker` processes for the tests, forked from one interpreter that has already imported the worker.

Each worker a test starts is a real, separate `terraseg worker` process (its own pid and session, its own Redis
connections, killable with SIGKILL as a dying machine would be) that runs `worker.cli.main(["worker", ...])`, the
very function `python -m worker worker` runs. Only the interpreter's start-up is shared: importing torch and the
pipelines costs about 4 s of CPU per process, and the suite starts some 60 workers on a 2-core machine.

`python -m tests.worker_zygote` (started once per test process by tests/services.py) imports the worker's modules,
then reads one JSON request per line on stdin ({"args", "env", "cwd", "log"}), forks a worker for each and answers
its pid on stdout; it reaps its children, so a worker that ended is gone from the process table. It inherits the
test process's environment, in which tests/conftest.py set the one-thread limits that the OpenMP runtime reads
when torch is imported. The CLI's own start-up (`python -m worker` as a fresh interpreter) stays covered by the
tests that run the command itself (tests/worker/cli, tests/test_compose.py).
"""

import json
import os
import signal
import sys
import traceback
from types import FrameType

import worker.entry  # noqa: F401  (the pipelines: what a worker imports before its first job)
from worker.cli import main


def reap(signum: int, frame: FrameType | None) -> None:
    """Collect ended workers (SIGCHLD), so the tests see them gone."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_worker(request: dict[str, object]) -> None:
    """In the forked child: a process of its own as `terraseg worker` would be (its output to the log file, its
    own session, environment and folder), then the CLI's main; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the zygote's request pipe
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  (line by line, as a terminal)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.setsid()  # its own process group: a test kills it with its work horse and scheduler
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        os.chdir(str(request["cwd"]))
        code = main(["worker", *[str(a) for a in list(request["args"])]])  # type: ignore[call-overload]
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        traceback.print_exc()  # into the worker's log, which a failing test shows
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            run_worker(json.loads(line))
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
