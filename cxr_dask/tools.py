"""External tools run fail closed: Tesseract (OCR) and dcmtk's ``dcmdjpeg``.

The de-identifier and ``verify`` both read text in pixels with the Debian ``tesseract``
and both fall back to ``dcmdjpeg`` for old JPEG processes; the call is the same for
both, so it is written once here. What each makes of what it reads is its own
(``deid.pixels.policy``; verify's vocabulary). Every way a call can fail (the command
missing or not starting, a time limit, a non-zero exit) raises :class:`ToolFailure`
with a fixed kind and message: never the tool's output, which may quote what it read.

Tesseract's start (loading its language model) is 150-250 ms of CPU, most of a call on
a few lines of text, and an image with text needs two to four reads. So the default
``tesseract`` runs as a loaded engine (``_tesseract_server``, one process per thread,
the same library through its C API, the same output) that reads image after image; it
still runs in its own process, so the time limit and every failure above hold. Where
the library cannot be loaded, each read starts the command as before.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_dask._tesseract_server import ANSWER, READY, REQUEST


class ToolFailure(RuntimeError):
    """A tool that could not do its job; ``kind`` is missing, unstartable, timeout or failed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def run_tool(command: Sequence[str], timeout: float, stdin: bytes | None = None, one_thread: bool = False) -> bytes:
    """stdout of ``command``; :class:`ToolFailure` when it cannot start, fails or times out.

    ``one_thread`` limits OpenMP to one thread (Tesseract): Dask runs one task per core.
    """
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"} if one_thread else None
    try:
        result = subprocess.run(list(command), input=stdin, capture_output=True, env=env, check=False, timeout=timeout)
    except FileNotFoundError:
        raise ToolFailure("missing", "command not found") from None
    except subprocess.TimeoutExpired:
        raise ToolFailure("timeout", f"timed out after {timeout:g} s") from None
    except OSError as error:
        raise ToolFailure("unstartable", f"could not start ({type(error).__name__})") from None
    if result.returncode != 0:
        raise ToolFailure("failed", f"exited with status {result.returncode}")
    return result.stdout


def tesseract(image: np.ndarray, args: Sequence[str], timeout: float, command: str = "tesseract") -> str:
    """What Tesseract prints for an 8-bit grey image, one thread.

    The default command with arguments the engine understands (``-l``, ``--psm``,
    ``-c NAME=VALUE``, ``tsv``) is read by this thread's loaded engine for that language
    and those variables; anything else, or where the engine cannot start, runs the
    command with the image as PNG on stdin.
    """
    request = _engine_request(args) if command == "tesseract" else None
    if request is not None:
        if shutil.which(command) is None:  # the same check as the command's: no Tesseract, no OCR
            raise ToolFailure("missing", "command not found")
        engine = _engine(request[0])
        if engine is not None:
            return engine.read(np.ascontiguousarray(image, dtype=np.uint8), request[1], request[2], timeout)
    STATS["command_runs"] += 1
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    out = run_tool([command, "stdin", "stdout", *args], timeout, buffer.getvalue(), one_thread=True)
    return out.decode("utf-8", "replace")


#: Counts of what ``tesseract`` did in this process: engine starts, engine reads, command runs.
STATS = {"engine_starts": 0, "engine_reads": 0, "command_runs": 0}
_SERVER = Path(__file__).with_name("_tesseract_server.py")  # run as a script: python -I
#: Seconds an engine may take to load its model before the command is used instead.
ENGINE_START_TIMEOUT = 60.0
_local = threading.local()
_engines: weakref.WeakSet[_Engine] = weakref.WeakSet()
#: An engine's language and the variables it was started with (``NAME=VALUE``, sorted).
Kind = tuple[str, tuple[str, ...]]
_broken: set[Kind] = set()  # engines that could not start here: the command it is


def _engine_request(args: Sequence[str]) -> tuple[tuple[str, tuple[str, ...]], bytes, int] | None:
    """((language, variables), output, page segmentation mode) when the engine can do what
    ``args`` ask; the variables (``-c NAME=VALUE``) are set when an engine starts."""
    language, output, psm = "eng", b"text", 3
    settings: list[str] = []
    rest = list(args)
    try:
        while rest:
            arg = rest.pop(0)
            if arg == "-l":
                language = rest.pop(0)
            elif arg == "--psm":
                psm = int(rest.pop(0))
            elif arg == "-c" and "=" in rest[0]:
                settings.append(rest.pop(0))
            elif arg == "tsv" and not rest:
                output = b"tsv "
            else:
                return None
    except (IndexError, ValueError):
        return None
    return (language, tuple(sorted(settings))), output, psm


class _Engine:
    """One loaded Tesseract process; any failure ends it (the next read starts another)."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.pid = os.getpid()
        language, settings = kind
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", str(_SERVER), language, *settings],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        STATS["engine_starts"] += 1
        _engines.add(self)

    def ready(self) -> bool:
        try:
            if self._receive(len(READY), time.monotonic() + ENGINE_START_TIMEOUT) == READY:
                return True
        except ToolFailure:
            pass
        self.close()
        return False

    def _receive(self, size: int, deadline: float) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ToolFailure("timeout", "timed out")
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise ToolFailure("failed", "the engine ended")
            data += chunk
        return bytes(data)

    def read(self, image: np.ndarray, output: bytes, psm: int, timeout: float) -> str:
        """What the engine reads in ``image``; :class:`ToolFailure` (and the engine ends) on failure."""
        deadline = time.monotonic() + timeout
        if self.process is None:
            raise ToolFailure("failed", "the engine ended")
        try:
            height, width = image.shape
            assert self.process.stdin is not None
            self.process.stdin.write(REQUEST.pack(output, psm, width, height) + image.tobytes())
            self.process.stdin.flush()
            status, length = ANSWER.unpack(self._receive(ANSWER.size, deadline))
            text = self._receive(length, deadline) if length else b""
        except ToolFailure as failure:
            self.close()
            if failure.kind == "timeout":
                raise ToolFailure("timeout", f"timed out after {timeout:g} s") from None
            raise
        except (OSError, ValueError, struct.error):
            self.close()
            raise ToolFailure("failed", "the engine ended") from None
        STATS["engine_reads"] += 1
        if status != 0:
            raise ToolFailure("failed", "the engine could not read the image")
        return text.decode("utf-8", "replace")

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None or self.pid != os.getpid():
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __del__(self) -> None:
        # at interpreter exit the modules close needs may be gone; the engine's input closes anyway
        with contextlib.suppress(Exception):
            self.close()


def _engine(kind: Kind) -> _Engine | None:
    """This thread's engine of ``kind`` (started on first use), or None where it cannot run."""
    if kind in _broken:
        return None
    engines: dict[Kind, _Engine] = _local.__dict__.setdefault("engines", {})
    engine = engines.get(kind)
    if engine is not None and engine.process is not None and engine.pid == os.getpid():
        return engine
    engine = _Engine(kind)
    if not engine.ready():
        _broken.add(kind)
        return None
    engines[kind] = engine
    return engine


@atexit.register
def close_engines() -> None:
    """End every engine of this process (each also ends when its input closes)."""
    for engine in list(_engines):
        engine.close()
