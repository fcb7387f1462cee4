"""Job records in Redis (``EMBER_BROKER_URL`` set): hashes in the result-backend Redis, written by
the workers, read by the API and the CLI from any process."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from workers.jobs.model import (
    RETENTION_S,
    TERMINAL,
    BatchOutcome,
    Job,
    JobNotFoundError,
    JobStore,
    job_from,
    record_of,
)

if TYPE_CHECKING:
    import redis


def redis_client(url: str) -> redis.Redis:
    """A client that rides out a Redis restart: commands retry with backoff for ~30 s."""
    import redis as redis_lib
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    return redis_lib.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 40),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=15,
        decode_responses=True,
    )


def _encoded(fields: dict[str, Any]) -> Any:
    """Hash fields as JSON strings (typed ``Any``: redis-py's mapping type is invariant)."""
    return {k: json.dumps(v) for k, v in fields.items()}


class RedisJobStore(JobStore):
    """``ember:job:<id>`` (hash of JSON fields), ``ember:job:<id>:batches`` (index -> JSON),
    ``ember:job:<id>:attempts`` (index -> deliveries) and ``ember:jobs`` (ids by creation)."""

    prefix = "ember:job:"
    index_key = "ember:jobs"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis_client(url)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}{job_id}{':' + part if part else ''}"

    def _create(self, job: Job) -> None:
        record = _encoded(record_of(job))
        pipe = self.client.pipeline()
        pipe.hset(self._key(job.id), mapping=record)
        pipe.zadd(self.index_key, {job.id: job.created_at})
        pipe.execute()

    def _get(self, job_id: str) -> Job | None:
        pipe = self.client.pipeline()
        pipe.hgetall(self._key(job_id))
        pipe.hgetall(self._key(job_id, "batches"))
        raw, raw_batches = pipe.execute()
        if not raw:
            return None
        record = {k: json.loads(v) for k, v in raw.items()}
        batches = {int(k): BatchOutcome.from_dict(json.loads(v)) for k, v in raw_batches.items()}
        return job_from(record, batches)

    def list(self, limit: int = 20) -> list[Job]:
        jobs = []
        for raw_id in self.client.zrevrange(self.index_key, 0, max(limit, 1) - 1):
            job_id = str(raw_id)
            job = self.get(job_id)
            if job is None:  # expired record: drop it from the index
                self.client.zrem(self.index_key, job_id)
                continue
            jobs.append(job)
        return jobs

    def update(self, job_id: str, **fields: Any) -> None:
        self._check_fields(fields)
        if fields:
            self.client.hset(self._key(job_id), mapping=_encoded(fields))

    def _put_batch(self, job_id: str, outcome: BatchOutcome) -> None:
        self.client.hset(
            self._key(job_id, "batches"), str(outcome.index), json.dumps(outcome.to_dict())
        )

    def _attempts(self, job_id: str, index: int) -> int:
        value = self.client.hget(self._key(job_id, "attempts"), str(index))
        return int(value) if value else 0

    def _batch(self, job_id: str, outcome: BatchOutcome, bump: bool) -> int:
        if bump:
            key = self._key(job_id, "attempts")
            attempts = int(self.client.hincrby(key, str(outcome.index), 1))
        else:
            attempts = self._attempts(job_id, outcome.index)
        outcome.attempts = attempts
        self._put_batch(job_id, outcome)
        return attempts

    def _finish(self, job_id: str, fields: dict[str, Any]) -> bool:
        key = self._key(job_id)
        done = False

        def attempt(pipe: Any) -> None:
            nonlocal done
            current = pipe.hget(key, "state")
            if current is None:
                raise JobNotFoundError(job_id)
            if json.loads(current) in TERMINAL:
                done = False
                return
            pipe.multi()
            pipe.hset(key, mapping=_encoded({**fields, "finished_at": time.time()}))
            for part in ("", "batches", "attempts"):
                pipe.expire(self._key(job_id, part), RETENTION_S)
            done = True

        self.client.transaction(attempt, key)
        return done

    def close(self) -> None:
        self.client.close()
