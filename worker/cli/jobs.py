"""The job verbs: worker, status, jobs, cancel, logs, retry, delete, recover, health."""

import argparse
import json
import socket
from typing import TYPE_CHECKING

from core.config import Settings
from worker.queue.client import ChunkClient, JobClient, TrainingClient
from worker.queue.service import QUEUES, serve

if TYPE_CHECKING:
    from core.jobs.store import JobStatus

JOB_VERBS = ("worker", "status", "jobs", "cancel", "logs", "retry", "delete", "recover", "health")


def add_job_parsers(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    worker = verbs.add_parser("worker", help="serve jobs from Redis (default: every queue)")
    worker.add_argument("--queues", nargs="+", metavar="QUEUE", help="download, inference and/or training")
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.add_argument(
        "--no-fork",
        dest="fork",
        action="store_false",
        default=None,
        help="run jobs in the worker process (warm, faster start) instead of a forked process per job",
    )
    status = verbs.add_parser("status", help="show one job's state and progress")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    jobs = verbs.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--json", action="store_true", help="print a JSON list")
    for verb, text in (
        ("cancel", "cancel a queued or running job"),
        ("logs", "print a job's log"),
        ("retry", "queue a failed or cancelled job again"),
        ("delete", "delete a job that has ended, with its outputs"),
    ):
        verbs.add_parser(verb, help=text).add_argument("job_id")
    verbs.add_parser("recover", help="re-queue jobs whose worker died or that Redis lost")
    health = verbs.add_parser("health", help="Redis, live workers and jobs; exit 1 when Redis is unreachable")
    health.add_argument(
        "--this-host",
        action="store_true",
        help="exit 1 also when no live worker runs on this host (a container's health check)",
    )


def format_status(status: "JobStatus") -> str:
    """One human line per job: id, state, progress, message, and the error sentence when it failed."""
    eta = (
        f", about {status.eta_s:.0f} s left" if status.eta_s is not None and status.state == "running" else ""
    )
    text = f"{status.job_id}  {status.state:9s} {100 * status.fraction:5.1f}%  {status.message}{eta}"
    return text + (f"\n    error: {status.error}" if status.error and status.error != status.message else "")


def command_jobs(args: argparse.Namespace, settings: Settings) -> int:
    """The job verbs: status, jobs, cancel, logs, retry, delete, recover, worker."""
    client = JobClient(settings)
    runs = TrainingClient(settings)
    job_id = getattr(args, "job_id", None)
    if job_id is not None and not client.store.exists(job_id) and runs.store.exists(job_id):
        client = runs  # a training run's id: the same verbs work on it
    if args.verb == "worker":
        return serve(settings, args.queues or QUEUES, burst=args.burst, fork=args.fork)
    if args.verb == "status":
        status = client.status(args.job_id)
        print(json.dumps(status.to_dict(), indent=1) if args.json else format_status(status))
    elif args.verb == "jobs":
        statuses = client.list_jobs() + runs.list_jobs()
        if args.json:
            print(json.dumps([s.to_dict() for s in statuses], indent=1))
        for status in [] if args.json else statuses:
            print(format_status(status))
    elif args.verb == "cancel":
        print(format_status(client.cancel(args.job_id)))
    elif args.verb == "logs":
        print(client.logs(args.job_id), end="")
    elif args.verb == "retry":
        print(format_status(client.retry(args.job_id)))
    elif args.verb == "delete":
        client.delete(args.job_id)
        print(f"deleted {args.job_id}")
    elif args.verb == "recover":
        requeued = client.recover() + runs.recover() + ChunkClient(settings).recover()
        print(f"re-queued {len(requeued)} job(s)" + (": " + " ".join(requeued) if requeued else ""))
    elif args.verb == "health":
        return command_health(client, args.this_host)
    return 0


def command_health(client: "JobClient", this_host: bool) -> int:
    """One line of health; 1 when Redis is unreachable or (`this_host`) no live worker runs here."""

    health = client.health()
    print(
        f"redis: {'up' if health.redis_ok else 'down'}; workers: {health.workers}; queued: {health.queued}; "
        f"running: {health.running}; {health.message}"
    )
    for damaged in client.store.damaged_folders():  # every scan skips them; an operator should know
        print(f"damaged job folder {damaged.job_id}: {damaged.reason}")
    if not health.redis_ok:
        return 1
    if this_host:
        here = client.live_workers(socket.gethostname())
        print(
            f"workers on this host ({socket.gethostname()}): {len(here)}"
            + (f" ({', '.join(here)})" if here else "")
        )
        return 0 if here else 1
    return 0
