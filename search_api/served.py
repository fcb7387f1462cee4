"""The encoders the API serves: ``EMBER_ENCODER`` always, and each encoder that built a collection
it is asked to search.

A versioned collection ``<name>__<fingerprint>__v<N>`` names the fingerprint of the encoder whose
vectors it holds; its metadata records how to load that encoder (``ember_source.encoder.spec``,
written by every index job, :mod:`indexer.sources`; else the preset named by the ``build`` record
of :func:`indexer.pipeline.begin_build`). When an alias moves onto a build of another encoder (a
retrain promotion), the next ``/search`` on it finds that fingerprint unloaded, loads the encoder
in a background thread, warms it through its own micro-batcher and only then adds it to the
registry (one dict assignment on the event loop: atomic for every request). Requests already
running keep the encoder they leased; an encoder nobody leases is unloaded when more than
``EMBER_API_MAX_ENCODERS`` are loaded (least recently used first; the default never).

While an encoder loads, ``/search`` waits for it up to ``EMBER_API_ENCODER_WAIT_S`` (30 s), then
answers 503 with Retry-After: a tiny or cached model loads in well under a second, so clients of
a moved alias see no error, and a large one does not pile up requests forever.

Which specs may be loaded: :mod:`search_api.encoder_specs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from fastapi.concurrency import run_in_threadpool

from encoders.errors import EmberError
from encoders.instructions import DEFAULT_TASK, instruction_for
from indexer.pipeline import parse_version
from search_api.batcher import EncodeFn, MicroBatcher, Mode, Named
from search_api.encoder_specs import EncoderUnavailableError as EncoderUnavailableError
from search_api.encoder_specs import allowed_roots as allowed_roots
from search_api.encoder_specs import check_spec as check_spec
from search_api.encoder_specs import recorded_encoder as recorded_encoder
from search_api.schemas import ServedEncoder

if TYPE_CHECKING:
    from encoders import Encoder
    from indexer.store import CollectionInfo, Store
    from search_api.settings import ApiSettings
    from search_api.state import ApiState

log = logging.getLogger(__name__)

WARMUP_QUERY = "warm up the encoder"
FAILED_RETRY_S = 30.0  # a failed load is not retried on every request


class EncoderLoadingError(EmberError, RuntimeError):
    """The collection's encoder is still loading after the bounded wait: 503, retry."""

    status = 503


def named_vectors(encoder: Encoder, texts: list[str], mode: Mode, instruction: str | None) -> Named:
    """What the micro-batcher carries: a query's named vectors as the encoder declares them
    (``{"dense"}``; MoEE ``sum``: ``{"hs", "rw"}``, searched as they are, never combined into
    one vector and split again), a document's one vector (``/v1/embeddings``) as ``dense``."""
    if mode == "query":
        return encoder.encode_queries_named(texts, instruction)
    return {"dense": encoder.encode_documents(texts)}


def encode_fn(encoder: Encoder) -> EncodeFn:
    return functools.partial(named_vectors, encoder)


@dataclass(eq=False)
class Served:
    """One loaded encoder, its own micro-batcher and how many requests use it now."""

    encoder: Encoder
    batcher: MicroBatcher
    spec: str
    default: bool = False
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.encoder.config.name

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint


@dataclass(frozen=True)
class Target:
    """What searching one collection needs: the resolved build, its encoder's fingerprint
    (None: an unversioned collection, searched with the default encoder) and the spec and name
    its metadata records (read only when that fingerprint is not loaded)."""

    requested: str
    collection: str
    fingerprint: str | None
    spec: str | None = None
    name: str | None = None


class View(NamedTuple):
    """How ``GET /collections`` shows one collection; ``target``: load its encoder ahead."""

    encoder: str | None
    loaded: bool
    searchable: bool
    target: Target | None = None


BatcherFactory = Callable[["Encoder"], MicroBatcher]


class EncoderRegistry:
    """Loaded encoders by fingerprint. Mutated on the event loop only; :meth:`target` (which
    reads the store) runs on a worker thread and only reads it."""

    def __init__(self, settings: ApiSettings, make_batcher: BatcherFactory) -> None:
        self.settings = settings
        self.cap = settings.api_max_encoders
        self.wait_s = settings.api_encoder_wait_s
        self._make_batcher = make_batcher
        self._served: OrderedDict[str, Served] = OrderedDict()  # least recently used first
        self._default: Served | None = None
        self._loading: dict[str, asyncio.Task[Served]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ember-load")

    # ---- what is served -------------------------------------------------------------------
    @property
    def default(self) -> Served | None:
        return self._default

    def set_default(self, served: Served) -> None:
        served.default = True
        self._default = served
        self._served[served.fingerprint] = served

    def loaded(self) -> list[Served]:
        """Loaded encoders, the default first, then most recently used first."""
        rest = [s for s in reversed(self._served.values()) if not s.default]
        return ([self._default] if self._default else []) + rest

    def get(self, fingerprint: str) -> Served | None:
        return self._served.get(fingerprint)

    def loading(self) -> list[str]:
        return list(self._loading)

    # ---- resolving a collection (worker thread) -------------------------------------------
    def target(self, store: Store, name: str) -> Target:
        resolved = store.check_complete(store.resolve(name))  # an unfinished build: 409
        parsed = parse_version(resolved)
        if parsed is None:
            return Target(name, resolved, None)
        fingerprint = parsed[1]
        if fingerprint in self._served:
            return Target(name, resolved, fingerprint)
        spec, encoder_name = recorded_encoder(store.collection_meta(resolved), fingerprint)
        return Target(name, resolved, fingerprint, spec, encoder_name)

    def describe(self, store: Store, info: CollectionInfo) -> View:
        """How a listed collection is served (worker thread; reads its metadata only when its
        encoder is not loaded)."""
        parsed = parse_version(info.name)
        if parsed is None:
            return View(self._default.name if self._default else None, True, True)
        served = self._served.get(parsed[1])
        if served is not None:
            return View(served.name, True, True)
        spec, name = recorded_encoder(store.collection_meta(info.name), parsed[1])
        if spec is None or parsed[1] in self._failed:
            return View(name, False, False)
        try:
            check_spec(spec, self.settings)
        except EncoderUnavailableError:
            return View(name, False, False)
        aliased = sorted(info.aliases)
        target = Target(aliased[0], info.name, parsed[1], spec, name) if aliased else None
        return View(name, False, True, target)

    # ---- leasing (event loop) -------------------------------------------------------------
    async def acquire(self, target: Target) -> Served:
        """The encoder for ``target``, leased (call :meth:`release`): loaded first if needed,
        waiting for it at most ``wait_s``."""
        for _ in range(3):  # an encoder evicted right after its load finished is loaded again
            served = self._lookup(target)
            if served is None:
                task = self._start_load(target)
                try:
                    served = await asyncio.wait_for(asyncio.shield(task), self.wait_s)
                except TimeoutError:
                    raise EncoderLoadingError(
                        f"the encoder {target.fingerprint} of collection {target.requested!r} "
                        f"({target.collection}) is loading; retry shortly"
                    ) from None
                if self._served.get(served.fingerprint) is not served:
                    continue
            served.leases += 1
            served.last_used = time.monotonic()
            self._served.move_to_end(served.fingerprint)
            return served
        raise EncoderLoadingError(f"the encoder {target.fingerprint} is being swapped; retry")

    def release(self, served: Served) -> None:
        served.leases -= 1
        if served.leases == 0:
            self._evict()

    @contextlib.asynccontextmanager
    async def lease(self, target: Target) -> Any:
        served = await self.acquire(target)
        try:
            yield served
        finally:
            self.release(served)

    def prefetch(self, targets: Iterable[Target]) -> None:
        """Start loading the encoders of ``targets`` (aliases seen to serve a build of an encoder
        not loaded) while there is room under the cap; never waits, never raises."""
        for target in targets:
            if len(self._served) + len(self._loading) >= self.cap:
                return
            with contextlib.suppress(EncoderUnavailableError):
                if target.fingerprint is not None and self._lookup(target) is None:
                    self._start_load(target)

    # ---- internals ------------------------------------------------------------------------
    def _failed_now(self) -> dict[str, str]:
        now = time.monotonic()
        self._failed = {k: v for k, v in self._failed.items() if now - v[0] < FAILED_RETRY_S}
        return {k: v[1] for k, v in self._failed.items()}

    def _lookup(self, target: Target) -> Served | None:
        if target.fingerprint is None:
            if self._default is None:
                raise EncoderLoadingError("the default encoder is loading; retry shortly")
            return self._default
        served = self._served.get(target.fingerprint)
        if served is not None:
            return served
        if target.fingerprint in self._loading:
            return None
        failed = self._failed_now().get(target.fingerprint)
        if failed is not None:
            raise EncoderUnavailableError(failed)
        if target.spec is None:
            raise EncoderUnavailableError(
                f"collection {target.requested!r} ({target.collection}) was built by encoder "
                f"{target.fingerprint}, which this server does not serve, and the build records "
                "no encoder spec to load (built by `ember index` or before builds recorded "
                "one); serve it with EMBER_ENCODER set to that encoder, or re-index"
            )
        check_spec(target.spec, self.settings)
        return None

    def _start_load(self, target: Target) -> asyncio.Task[Served]:
        assert target.fingerprint is not None and target.spec is not None
        fingerprint = target.fingerprint
        task = self._loading.get(fingerprint)
        if task is None:
            spec = check_spec(target.spec, self.settings)
            task = asyncio.create_task(self._load(target, spec), name=f"ember-load-{fingerprint}")
            self._loading[fingerprint] = task
            task.add_done_callback(lambda t: self._loaded(fingerprint, t))
        return task

    def _loaded(self, fingerprint: str, task: asyncio.Task[Served]) -> None:
        self._loading.pop(fingerprint, None)
        if not task.cancelled() and task.exception() is not None:
            self._failed[fingerprint] = (time.monotonic(), str(task.exception()))

    async def _load(self, target: Target, spec: str) -> Served:
        fingerprint = target.fingerprint
        loop = asyncio.get_running_loop()
        log.info("loading encoder %s (%s) for %s", fingerprint, spec, target.collection)
        started = time.perf_counter()
        try:
            encoder = await loop.run_in_executor(self._executor, self._load_encoder, spec)
            if encoder.fingerprint != fingerprint:
                raise EncoderUnavailableError(
                    f"collection {target.collection} was built by encoder {fingerprint}, but "
                    f"its recorded encoder {spec!r} now has fingerprint {encoder.fingerprint} "
                    "(changed since the build); re-index"
                )
            batcher = await self._warm(encoder)
        except EncoderUnavailableError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.error("encoder %r failed to load", spec, exc_info=exc)
            raise EncoderUnavailableError(
                f"the encoder of collection {target.collection} ({spec!r}) failed to load: {first}"
            ) from None
        served = Served(encoder, batcher, spec)
        self._served[fingerprint] = served  # the swap: visible to every request from here on
        log.info(
            "encoder %s (%s) ready in %.2f s", served.name, fingerprint,
            time.perf_counter() - started,
        )  # fmt: skip
        self._evict()
        return served

    async def _warm(self, encoder: Encoder) -> MicroBatcher:
        """Its own micro-batcher, started, after one query through it (which also warms the
        batcher's worker thread)."""
        batcher = self._make_batcher(encoder)
        await batcher.start()
        try:
            await batcher.encode([WARMUP_QUERY], "query", instruction_for(DEFAULT_TASK))
        except BaseException:
            await batcher.stop()
            raise
        return batcher

    def _load_encoder(self, spec: str) -> Encoder:
        from encoders import load_encoder  # torch: loaded with the first encoder, not at import

        return load_encoder(spec)

    def _evict(self) -> None:
        """Unload least recently used encoders nobody leases while over the cap."""
        while len(self._served) > self.cap:
            idle = [s for s in self._served.values() if not s.default and s.leases == 0]
            if not idle:
                return
            victim = idle[0]
            del self._served[victim.fingerprint]
            log.info("unloading encoder %s (%s)", victim.name, victim.fingerprint)
            stop = asyncio.get_running_loop().create_task(victim.batcher.stop())
            self._stopping.add(stop)
            stop.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop loads and the batchers of every encoder but the default (the app stops its)."""
        for task in list(self._loading.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for served in list(self._served.values()):
            if not served.default:
                await served.batcher.stop()
        self._served.clear()
        self._default = None
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


def describe(state: ApiState, info: CollectionInfo) -> View:
    assert state.encoders is not None and state.store is not None
    return state.encoders.describe(state.store, info)


async def served_encoders(state: ApiState) -> tuple[list[ServedEncoder], list[str]]:
    """``/health``'s view: every loaded encoder with what it serves, and those loading."""
    assert state.encoders is not None and state.store is not None
    default = state.encoders.default
    try:
        infos = await run_in_threadpool(state.store.list_collections)
    except Exception:  # health must answer even when the store does not
        log.warning("listing collections for /health failed", exc_info=True)
        infos = []
    serves = serving(infos, default.fingerprint if default else None)
    encoders = [
        ServedEncoder(
            name=s.name,
            fingerprint=s.fingerprint,
            default=s.default,
            serves=serves.get(s.fingerprint, []),
        )
        for s in state.encoders.loaded()
    ]
    return encoders, state.encoders.loading()


def serving(infos: Iterable[CollectionInfo], default: str | None) -> dict[str, list[str]]:
    """Fingerprint -> the aliases (and unaliased collection names) whose builds it made;
    unversioned collections count for ``default``."""
    out: dict[str, list[str]] = {}
    for info in infos:
        parsed = parse_version(info.name)
        fingerprint = parsed[1] if parsed else default
        if fingerprint is not None:
            out.setdefault(fingerprint, []).extend(sorted(info.aliases) or [info.name])
    return out
