"""``cxr_dask.startup``: what ``cxr-dask run`` changes in its process while it imports, and
puts back: the same entry points, the same dask config, the collector on again."""

from __future__ import annotations

import gc
import importlib.metadata
import json
import subprocess
import sys

import yaml

from cxr_dask import startup

GROUPS = ("fsspec.specs", "dask.sizeof", "pylibjpeg.pixel_data_decoders", "console_scripts", "no.such.group")


def test_the_start_up_reads_the_packages_entry_points_once(monkeypatch):
    """fsspec, dask and pylibjpeg each read every package's metadata as they load (five
    times in all); between ``begin`` and ``end`` one reading serves every lookup, with the
    same entry points."""
    original = importlib.metadata.entry_points
    readings: list[dict[str, str]] = []

    def counted(**params: str) -> object:
        readings.append(params)
        return original(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", counted)
    startup.begin()
    try:
        during = [importlib.metadata.entry_points(group=group) for group in GROUPS]
        whole = importlib.metadata.entry_points()
    finally:
        startup.end()
    assert readings == [{}]
    assert importlib.metadata.entry_points is counted  # put back
    assert [_named(found) for found in during] == [_named(original(group=group)) for group in GROUPS]
    assert sorted(whole.select().groups) == sorted(original().select().groups)


def _named(entry_points: object) -> list[tuple[str, str, str]]:
    return [(point.group, point.name, point.value) for point in entry_points]  # type: ignore[attr-defined]


def test_the_start_up_parses_yaml_by_libyaml_and_puts_it_back():
    original = yaml.safe_load
    text = "a: 1\nb: [x, {c: null}]\nd: 1e3\ne: '08'\nf: yes\n"
    startup.begin()
    try:
        during, replaced = yaml.safe_load(text), yaml.safe_load is not original
    finally:
        startup.end()
    assert yaml.safe_load is original
    assert (during, replaced) == (original(text), hasattr(yaml, "CSafeLoader"))


def test_the_collector_is_off_only_between_begin_and_end(monkeypatch):
    """``end`` freezes the start-up's objects only when asked (the CLI's own process, which
    ends with its command); a collector the caller had turned off stays off."""
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # not this test process's objects
    assert gc.isenabled()
    try:
        startup.begin()
        off = gc.isenabled()
        startup.end()
        on, frozen_then = gc.isenabled(), len(frozen)
        startup.begin()
        startup.end(freeze=True)
        startup.end(freeze=True)  # once only
        gc.disable()  # the caller's choice
        startup.begin()
        startup.end(freeze=True)
        kept_off = not gc.isenabled()
    finally:
        startup.end()
        gc.enable()
    assert (off, on, frozen_then, len(frozen), kept_off) == (False, True, 0, 1, True)


_CONFIG = """
import json, sys
from cxr_dask import startup
if sys.argv[1] == "begin":
    startup.begin()
import dask.config, distributed  # dask's YAML and distributed's, fsspec's and dask's entry points
startup.end()
print(json.dumps(dask.config.config, sort_keys=True, default=repr))
"""


def test_dask_s_config_is_the_same_after_a_start_up():
    configs = [
        subprocess.run([sys.executable, "-c", _CONFIG, how], capture_output=True, text=True, check=True).stdout
        for how in ("begin", "plain")
    ]
    assert json.loads(configs[0]) == json.loads(configs[1])
    assert "distributed" in json.loads(configs[0])
