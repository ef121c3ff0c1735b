"""A fault-injecting reverse proxy for the tests: aiohttp in front of moto's S3 server.

Clients talk to the proxy's endpoint as if it were S3; each request is forwarded to moto
unchanged, or answered with one of the faults an object store shows under load:

- ``slowdown``: 503 SlowDown (S3's throttling answer), nothing forwarded
- ``server_error``: 500 InternalError, nothing forwarded
- ``cut``: the response forwarded, its body cut short (the full Content-Length announced,
  half the bytes sent, then the connection closed); only for responses with a body
- ``reset``: the connection closed before any answer, nothing forwarded
- ``slow``: no answer for ``slow_seconds`` (longer than the client's read timeout), then
  the connection closed, nothing forwarded

Which requests fail is deterministic: each decision is drawn from a generator seeded by
the plan's seed, the request (method, path, query, Range) and how many times that same
request was seen before, so concurrent clients do not change who gets which fault.
``only`` narrows the faults to some requests (say, writes of output files). Faults that
forward nothing leave no side effect, so a retry is always safe.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

FAULT_KINDS = ("slowdown", "server_error", "cut", "reset", "slow")

#: Headers that belong to one hop of the connection, never forwarded.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "content-length"}
)

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)


@dataclass(frozen=True)
class Seen:
    """What a fault plan may look at to decide: the request's method, path, query, Range."""

    method: str
    path: str
    query: str
    range: str | None


@dataclass(frozen=True)
class FaultPlan:
    """The probability of each fault kind per request (their sum at most 1) and the seed."""

    slowdown: float = 0.0
    server_error: float = 0.0
    cut: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    seed: int = 0
    slow_seconds: float = 2.0
    only: Callable[[Seen], bool] | None = None

    def choose(self, seen: Seen, occurrence: int) -> str | None:
        """The fault for the ``occurrence``-th sighting of this request, or None."""
        if self.only is not None and not self.only(seen):
            return None
        draw = random.Random(f"{self.seed}|{seen.method}|{seen.path}|{seen.query}|{seen.range}|{occurrence}").random()
        for kind in FAULT_KINDS:
            draw -= getattr(self, kind)
            if draw < 0:
                return kind
        return None


NO_FAULTS = FaultPlan()


@dataclass
class FaultProxy:
    """The proxy's event loop runs in a thread of the test process; ``plan`` may change any time."""

    upstream: str
    plan: FaultPlan = NO_FAULTS
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0
    _occurrences: Counter[tuple[str, str, str, str | None]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        return self

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def reset_counts(self) -> None:
        with self._lock:
            self.injected.clear()
            self.forwarded = 0

    def _decide(self, seen: Seen) -> str | None:
        with self._lock:
            key = (seen.method, seen.path, seen.query, seen.range)
            occurrence = self._occurrences[key]
            self._occurrences[key] += 1
            kind = self.plan.choose(seen, occurrence)
            if kind == "cut" and seen.method != "GET":
                kind = None  # nothing to cut short: no body comes back
            if kind:
                self.injected[kind] += 1
            else:
                self.forwarded += 1
            return kind

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path, request.query_string, request.headers.get("Range"))
        kind = self._decide(seen)
        if kind == "slowdown":
            return _error(503, "SlowDown", "Please reduce your request rate.")
        if kind == "server_error":
            return _error(500, "InternalError", "We encountered an internal error. Please try again.")
        if kind == "reset":
            return _drop(request)
        if kind == "slow":
            await asyncio.sleep(self.plan.slow_seconds)
            return _drop(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            length = upstream.headers.get("Content-Length", str(len(payload)))
            status = upstream.status
        response = web.StreamResponse(status=status, headers=answer_headers)
        response.headers["Content-Length"] = length
        await response.prepare(request)
        if kind == "cut" and payload:
            await response.write(payload[: len(payload) // 2])
            return _drop(request, response)
        if request.method != "HEAD":
            await response.write(payload)
        await response.write_eof()
        return response


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=_ERROR_BODY.format(code=code, message=message).encode(), content_type="application/xml"
    )


def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the connection at once: the client sees a reset or a body cut short."""
    if request.transport is not None:
        request.transport.abort()
    return response if response is not None else web.Response(status=500)
