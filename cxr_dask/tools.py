"""External tools run fail closed: Tesseract (OCR) and dcmtk's ``dcmdjpeg``.

The de-identifier and ``verify`` both read text in pixels with the Debian ``tesseract``
and both fall back to ``dcmdjpeg`` for old JPEG processes; the call is the same for
both, so it is written once here. What each makes of what it reads is its own
(``deid.pixels.policy``; verify's vocabulary). Every way a call can fail (the command
missing or not starting, a time limit, a non-zero exit) raises :class:`ToolFailure`
with a fixed kind and message: never the tool's output, which may quote what it read.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Sequence

import numpy as np
from PIL import Image


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
    """What Tesseract prints for an 8-bit grey image (sent as PNG on stdin), one thread."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    out = run_tool([command, "stdin", "stdout", *args], timeout, buffer.getvalue(), one_thread=True)
    return out.decode("utf-8", "replace")
