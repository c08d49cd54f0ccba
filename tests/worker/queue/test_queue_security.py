"""Jobs in Redis are JSON and name only TerraSeg's entry points; Redis can require a password, which no message
shows. A real password-protected redis-server and real workers."""

import json
import time
import zlib

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.services import RedisServer, sample_spec, wait_for
from worker.queue.client import ENTRY_POINT, JobClient, fetch_job, job_queue, redacted

PASSWORD = "s3cret-test-password"


@pytest.fixture
def redis_server(tmp_path):  # noqa: ANN001, ANN201 - this module's Redis asks for a password
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.kill()


def rq_state(client: JobClient, job_id: str, serializer: type | None) -> str:
    status = Job.fetch(job_id, connection=client.redis, serializer=serializer).get_status(refresh=True)
    return "" if status is None else str(status.value)


def until(condition, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_job_travels_as_json_through_a_redis_with_a_password(settings, client, start_worker):
    assert f":{PASSWORD}@" in settings.redis_url
    start_worker()
    job_id = client.submit(sample_spec())
    wait_for(client, job_id, ("finished",), timeout_s=180)
    raw = client.redis.hget(f"rq:job:{job_id}", "data")
    func_name, _, args, _ = json.loads(zlib.decompress(raw))  # JSON, not a pickle
    assert (func_name, args) == (ENTRY_POINT, [job_id])
    health = client.health()
    assert health.redis_ok and health.workers == 1


def test_a_job_naming_any_other_function_is_refused_and_the_worker_carries_on(
    settings, client, start_worker, tmp_path
):
    start_worker()
    marker = tmp_path / "owned"
    # What someone who can write to Redis might try: a JSON job, and a pickled one, naming os.system.
    as_json = Queue("inference", connection=client.redis, serializer=JSONSerializer).enqueue(
        "os.system", f"touch {marker}"
    )
    as_pickle = Queue("inference", connection=client.redis).enqueue("os.system", f"touch {marker}")
    for job, serializer in ((as_json, JSONSerializer), (as_pickle, None)):
        until(lambda job=job, serializer=serializer: rq_state(client, job.id, serializer) == "failed")
    assert not marker.exists()
    refused = Job.fetch(as_json.id, connection=client.redis, serializer=JSONSerializer)
    result = refused.latest_result()
    assert result is not None and "is not a TerraSeg entry point" in (result.exc_string or "")
    ping = job_queue("inference", client.redis).enqueue("worker.entry.ping")  # the worker still serves jobs
    until(lambda: fetch_job(ping.id, client.redis).get_status(refresh=True) == "finished")


def test_a_wrong_password_is_reported_without_showing_any_password(settings, tmp_path):
    wrong = settings.model_copy(update={"redis_url": settings.redis_url.replace(PASSWORD, "not-it")})
    health = JobClient(wrong).health()
    assert not health.redis_ok and "redis://:***@127.0.0.1:" in health.message
    assert "not-it" not in health.message and PASSWORD not in health.message
    assert redacted("redis://user:pw@host:6380/1") == "redis://user:***@host:6380/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
