"""A Tesseract that stays loaded: reads 8-bit grey images from stdin, writes what it read.

Started by ``cxr_dask.tools`` (one per worker thread) as a separate process, so a crash
or a hang in Tesseract stays out of the worker and a time limit can still kill it; the
language model is loaded once (150-250 ms a call with the ``tesseract`` command, most of
its cost on a few lines of text). It runs the same library the ``tesseract`` command
runs, through its C API, and prints the same text. Standard library only: it is started
with ``python -I`` and imports nothing of the project.

Protocol (little-endian): on start it writes ``READY`` or ``FAIL!``. A request is
``<4s i i i``: the output (``tsv `` or ``text``), page segmentation mode, width, height,
then width x height bytes (one per pixel, rows top to bottom). The answer is ``<i i``:
status (0 read, 1 failed) and length, then that many bytes of UTF-8. End of input ends it.

    python -I _tesseract_server.py LANGUAGE [NAME=VALUE ...]

Each ``NAME=VALUE`` sets one of Tesseract's variables for every read (the command's
``-c NAME=VALUE``); one the library does not know is left out, as the command leaves it
out (with a warning), so a Tesseract without it reads as its command does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import sys

REQUEST = struct.Struct("<4siii")
ANSWER = struct.Struct("<ii")
READY, FAIL = b"READY", b"FAIL!"
#: What the ``tesseract`` command prints first in TSV mode (the C API leaves it out).
TSV_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"


def _library() -> ctypes.CDLL:
    """libtesseract with the few C API functions used here typed."""
    name = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
    lib = ctypes.CDLL(name)
    handle, text = ctypes.c_void_p, ctypes.c_char_p
    lib.TessBaseAPICreate.restype = handle
    lib.TessBaseAPIInit3.argtypes = [handle, text, text]
    lib.TessBaseAPISetVariable.argtypes = [handle, text, text]
    lib.TessBaseAPISetPageSegMode.argtypes = [handle, ctypes.c_int]
    lib.TessBaseAPISetImage.argtypes = [handle, text, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.TessBaseAPIGetTsvText.argtypes = [handle, ctypes.c_int]
    lib.TessBaseAPIGetTsvText.restype = handle
    lib.TessBaseAPIGetUTF8Text.argtypes = [handle]
    lib.TessBaseAPIGetUTF8Text.restype = handle
    lib.TessDeleteText.argtypes = [handle]
    lib.TessBaseAPIClear.argtypes = [handle]
    lib.TessBaseAPIEnd.argtypes = [handle]
    lib.TessBaseAPIDelete.argtypes = [handle]
    return lib


def _read_exactly(stream, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def serve(language: str, settings: list[str]) -> None:
    """Answer requests until stdin ends; ``settings``: Tesseract variables as ``NAME=VALUE``."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        lib = _library()
        api = lib.TessBaseAPICreate()
        if not api or lib.TessBaseAPIInit3(api, None, language.encode()) != 0:
            raise OSError("init")
        for setting in settings:
            name, _, value = setting.partition("=")
            lib.TessBaseAPISetVariable(api, name.encode(), value.encode())  # unknown: left out
    except (OSError, AttributeError):
        sink.write(FAIL)
        sink.flush()
        return
    sink.write(READY)
    sink.flush()
    try:
        while True:
            head = _read_exactly(source, REQUEST.size)
            if head is None:
                return
            output, psm, width, height = REQUEST.unpack(head)
            pixels = _read_exactly(source, width * height)
            if pixels is None:
                return
            lib.TessBaseAPISetPageSegMode(api, psm)
            lib.TessBaseAPISetImage(api, pixels, width, height, 1, width)
            found = lib.TessBaseAPIGetTsvText(api, 0) if output == b"tsv " else lib.TessBaseAPIGetUTF8Text(api)
            if found:
                text = ctypes.string_at(found)
                lib.TessDeleteText(found)
                answer = (TSV_HEADER.encode() + text) if output == b"tsv " else text
                sink.write(ANSWER.pack(0, len(answer)) + answer)
            else:
                sink.write(ANSWER.pack(1, 0))
            sink.flush()
            lib.TessBaseAPIClear(api)
    finally:
        lib.TessBaseAPIEnd(api)
        lib.TessBaseAPIDelete(api)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "eng", sys.argv[2:])
