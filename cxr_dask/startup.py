"""What ``cxr-dask run`` changes in its own process while it imports what its run needs (and
in the fork server forked from it, which inherits it): ``begin`` at the command's start,
``end`` once the imports are done (the server's in ``cxr_dask.frozen``).

Those imports (dask, distributed, pydicom, pyarrow, OpenCV, the passes) are the chain a
run's first worker waits on, ~0.5 s of CPU, serial (docs/scaling.md, "eleventh session").
Three things in it were not imports:

- *garbage collection*: some 300,000 objects, none garbage, walked in two full
  collections (~40-60 ms of CPU). The collector is off, as Python's documentation advises
  a process that forks without exec; the server turns it on before it forks a worker, the
  command's process once it has imported, freezing what the start-up made first when it
  is the CLI's own process (it ends with the command);
- *the installed packages' entry points*, read in full five times (fsspec's filesystems,
  dask's ``sizeof`` plugins, pylibjpeg's decoders three times; ~4-5 ms each over ~200
  packages): read once, each lookup then selected from that reading, the same entry
  points as each full reading gives;
- *dask's and distributed's YAML defaults* (and any dask config file of the user's),
  parsed by PyYAML's Python parser (~12 ms): by libyaml's where PyYAML was built with it,
  the same values.

Each is put back as it was by ``end``; nothing is changed where it was changed already.
"""

from __future__ import annotations

import gc
import importlib
import sys
from importlib.util import find_spec
from typing import Any

#: The modules whose ``entry_points`` read every installed package's metadata at each call.
METADATA_MODULES = ("importlib.metadata", "importlib_metadata")

#: (module, attribute, original) of each function replaced by ``begin``, until ``end``.
_REPLACED: list[tuple[Any, str, Any]] = []
#: True while ``begin`` has the garbage collector off.
_UNCOLLECTED: list[bool] = []


def begin() -> None:
    """The start-up's settings (above), until ``end``. Nothing where ``begin`` ran already."""
    if _REPLACED or _UNCOLLECTED:
        return
    if gc.isenabled():  # a collector off already is the caller's choice
        gc.disable()
        _UNCOLLECTED.append(True)
    for name in METADATA_MODULES:
        if name in sys.modules or find_spec(name) is not None:
            module = importlib.import_module(name)
            _replace(module, "entry_points", _read_once(module.entry_points))
    if find_spec("yaml") is not None:
        import yaml

        loader = getattr(yaml, "CSafeLoader", None)  # built with libyaml
        if loader is not None:
            _replace(yaml, "safe_load", _parsed_by(yaml.load, loader))


def end(freeze: bool = False) -> None:
    """Put back what ``begin`` changed: the collector on again (with ``freeze``, what the
    start-up made frozen first: no later collection walks it, nor collects it), the
    functions it replaced. Nothing where ``begin`` did not run."""
    while _REPLACED:
        module, attribute, original = _REPLACED.pop()
        setattr(module, attribute, original)
    if _UNCOLLECTED:
        _UNCOLLECTED.clear()
        if freeze:
            gc.freeze()
        gc.enable()


def _replace(module: Any, attribute: str, replacement: Any) -> None:
    _REPLACED.append((module, attribute, getattr(module, attribute)))
    setattr(module, attribute, replacement)


def _read_once(entry_points: Any) -> Any:
    """``entry_points`` reading every package's metadata once: a lookup selects from that
    reading what the same lookup would select from its own (``select`` with no parameters
    is the whole reading, as ``entry_points()`` is)."""
    read: list[Any] = []

    def entry_points_read_once(**params: Any) -> Any:
        if not read:
            read.append(entry_points())
        return read[0].select(**params)

    return entry_points_read_once


def _parsed_by(load: Any, loader: Any) -> Any:
    """``yaml.safe_load`` by ``loader`` (libyaml's safe loader: the same constructors)."""

    def safe_load(stream: Any) -> Any:
        return load(stream, Loader=loader)

    return safe_load
