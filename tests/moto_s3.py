"""A real S3 endpoint over HTTP for the tests: moto's server, with a request log.

``ThreadedMotoServer`` as s3fs's own test suite uses it, on a free loopback port; the
only addition is a WSGI wrapper that records every request (method, path, query,
Range header) and the bytes the server actually sent back in the response body, so a
test can count what a read fetched over the wire.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import requests
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

#: Test credentials; the long secret makes "was it ever printed?" a meaningful search.
ACCESS_KEY = "AKIACXRDASKTESTKEY01"
SECRET_KEY = "cxr-dask-test-secret-never-printed-0123456789"


@dataclass
class Request:
    method: str
    path: str
    query: str
    range: str | None
    sent: int = 0

    @property
    def bucket_key(self) -> str:
        return unquote(self.path.lstrip("/"))


class RequestLog:
    """Every request the server answered, with the response bytes it sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Request] = []

    def add(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def gets_of(self, path: str) -> list[Request]:
        """Object GETs (not listings) of ``bucket/key``."""
        return [r for r in self.snapshot() if r.method == "GET" and r.bucket_key == path and "list-type" not in r.query]


class _Counting:
    """WSGI middleware: counts the body bytes of each response as they are sent."""

    def __init__(self, app: Any, log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_RANGE"),
        )
        self.log.add(request)
        body = self.app(environ, start_response)
        try:
            for chunk in body:
                request.sent += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()


class CountingMotoServer(ThreadedMotoServer):
    """moto's threaded server with a :class:`RequestLog` in front of its WSGI app."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.log = RequestLog()

    def _server_entry(self) -> None:
        app = _Counting(DomainDispatcherApplication(create_backend_app), self.log)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Forget every bucket (moto's own reset API) and the request log."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        self.log.clear()


#: Server-side encryption with a KMS key, as the options a run passes to every write.
SSE_KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/cxr-dask-test"}


def sse_of(fs: Any, path: str) -> tuple[str | None, str | None]:
    """The encryption moto recorded for an object (``bucket/key`` on an s3fs file system),
    as its HEAD answers it."""
    bucket, key = path.split("/", 1)
    head = fs.call_s3("head_object", Bucket=bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


def storage_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "key": ACCESS_KEY, "secret": SECRET_KEY}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_counting_server() -> CountingMotoServer:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = CountingMotoServer()
    server.start()
    return server


def authenticating_server() -> Iterator[str]:
    """A separate moto server process that checks credentials (IAM auth on from the
    first request): with no IAM users, every key is refused, like revoked credentials."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)
