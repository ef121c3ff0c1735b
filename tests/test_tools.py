"""The fail-closed tool calls (``cxr_dask.tools``): Tesseract's loaded engine.

The engine must print what the ``tesseract`` command prints, start once per thread (not
once per read: a start is 150-250 ms of CPU, most of an image with a few lines of text),
and fail closed like the command: a time limit or a crash is a failure, and the next
read starts a fresh engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import deid_data
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from cxr_dask import tools
from cxr_dask.deid import pixels
from cxr_dask.deid.pixels import morphology
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.testing.synth_text import available_fonts

ULTRASOUND = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "GREYSCALE_IMAGE.dcm"


def _words(text: str = "DOE JOHN 1234567") -> np.ndarray:
    image = Image.new("L", (420, 60), 255)
    ImageDraw.Draw(image).text((10, 10), text, fill=0, font=ImageFont.truetype(available_fonts()[0], 32))
    return np.asarray(image)


@pytest.mark.parametrize("args", [["-l", "eng", "--psm", "6", "tsv"], ["--psm", "11"], ["--psm", "7"]])
def test_engine_prints_what_the_command_prints(args):
    image = _words()
    command = shutil.which("tesseract")
    assert command is not None
    read = tools.tesseract(image, args, 60)
    assert read == tools.tesseract(image, args, 60, command)  # a path: the command itself runs
    assert "JOHN" in read


def test_engine_reads_with_the_variables_it_is_given():
    """``-c NAME=VALUE`` reaches the engine as it reaches the command (an engine per set of
    variables: the de-identifier's reads and verify's keep their own settings)."""
    image = _words()
    digits = ["-l", "eng", "--psm", "7", "-c", "tessedit_char_whitelist=0123456789"]
    read = tools.tesseract(image, digits, 60)
    assert read == tools.tesseract(image, digits, 60, shutil.which("tesseract") or "")
    assert "1234567" in read and "JOHN" not in read
    assert "JOHN" in tools.tesseract(image, ["-l", "eng", "--psm", "7"], 60)
    assert tools._engine(("eng", ("tessedit_char_whitelist=0123456789",))) is not None


def test_an_unknown_variable_is_left_out_as_the_command_leaves_it_out():
    """A variable this Tesseract does not know (``tessedit_do_invert`` is to go in release
    6) is left out by the engine as by the command, which warns and reads on: the reads
    stay the command's, and the engine stays loaded (no process per read)."""
    args = ["-l", "eng", "--psm", "7", "-c", "no_such_tesseract_variable=1"]
    runs = tools.STATS["command_runs"]
    read = tools.tesseract(_words(), args, 60)
    assert tools.STATS["command_runs"] == runs
    assert tools._engine(("eng", ("no_such_tesseract_variable=1",))) is not None
    assert read == tools.tesseract(_words(), args, 60, shutil.which("tesseract") or "")
    assert "JOHN" in read


def test_a_text_image_starts_no_process(monkeypatch):
    """After its first start, the engine reads every line of an image: no process per image."""
    starts = []

    class Counted(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            starts.append(args[0][0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Counted)
    first = tools.STATS["engine_reads"]
    pixels.clean(pydicom.dcmread(ULTRASOUND), PixelOptions())
    assert len(starts) <= 1  # this thread's engine, unless an earlier test started it
    reads = tools.STATS["engine_reads"] - first
    assert reads >= 2  # the lines of the first pass, then the other polarity or the second look
    starts.clear()
    result = pixels.clean(pydicom.dcmread(ULTRASOUND), PixelOptions())
    assert result.report.count("text") >= 1
    assert starts == []
    assert tools.STATS["engine_reads"] - first == 2 * reads


def test_engine_fails_closed_and_the_next_read_starts_a_new_one():
    image = _words()
    args = ["-l", "eng", "--psm", "6", "tsv"]
    tools.tesseract(image, args, 60)
    engine = tools._engine(("eng", ()))
    assert engine is not None and engine.process is not None
    with pytest.raises(tools.ToolFailure) as caught:
        tools.tesseract(np.tile(image, (40, 4)), args, 0.001)
    assert caught.value.kind == "timeout"
    assert engine.process is None  # killed, not left reading
    assert "JOHN" in tools.tesseract(image, args, 60)
    crashed = tools._engine(("eng", ()))
    assert crashed is not None and crashed is not engine and crashed.process is not None
    os.kill(crashed.process.pid, 9)
    crashed.process.wait()
    with pytest.raises(tools.ToolFailure) as caught:
        tools.tesseract(image, args, 60)
    assert caught.value.kind == "failed"
    assert "JOHN" in tools.tesseract(image, args, 60)


def test_engine_is_not_used_without_the_command(monkeypatch):
    tools.tesseract(_words(), ["--psm", "7"], 60)  # an engine is running
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(tools.ToolFailure) as caught:
        tools.tesseract(_words(), ["--psm", "7"], 60)
    assert caught.value.kind == "missing"


@pytest.mark.parametrize("seed", range(3))
def test_components_by_opencv_are_scipys_in_scipys_order(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    mask = rng.random((300, 257)) > 0.75  # thousands of components, many sharing a top row
    weight = rng.random(mask.shape) > 0.7
    fast = morphology._component_stats(mask, weight)
    monkeypatch.setattr(morphology, "cv2", None)
    slow = morphology._component_stats(mask, weight)
    assert len(fast[0]) > 1000
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a, b)
