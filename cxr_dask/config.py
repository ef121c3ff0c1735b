"""One typed run configuration: config file, then command-line flags, validated up front.

Everything a user can get wrong (a missing flag, an unknown config key, a private
location inside the public output) is caught here, before any cluster starts.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cxr_dask.deid.freetext import FreeTextOptions, freetext_options_from
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import pixel_options_from
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location, overlaps

#: Partitions never hold more files than this (400,000 files -> 2,000 tasks a pass).
MAX_PARTITION_SIZE = 200


@dataclass(frozen=True)
class RunConfig:
    """What ``cxr-dask run`` needs; locations are fsspec URLs or local paths."""

    input: str
    output: str
    private: str
    workers: int = 2
    threads_per_worker: int = 1
    scheduler: str | None = None
    partition_size: int | None = None
    memory_limit: str = "auto"
    dashboard_address: str | None = ":8787"
    progress: bool = True
    retries: int = 2
    # May hold keys (s3fs ``key``/``secret``): never in repr, so never in a log line.
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    profile: ProfileOptions = field(default_factory=ProfileOptions)
    #: ``[freetext]``: k of the k-patient rule and the site's own keep list (deid/freetext.py).
    freetext: FreeTextOptions = field(default_factory=FreeTextOptions)

    def __post_init__(self) -> None:
        for name in ("input", "output", "private"):
            if not getattr(self, name):
                raise ConfigError(f"the {name} location is required")
        for name in ("workers", "threads_per_worker"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.partition_size is not None and self.partition_size < 1:
            raise ConfigError("partition_size must be at least 1")
        if self.retries < 0:
            raise ConfigError("retries must be 0 or more")
        self.check_locations()

    @property
    def input_location(self) -> Location:
        return Location(self.input, self.storage_options)

    @property
    def output_location(self) -> Location:
        return Location(self.output, self.storage_options)

    @property
    def private_location(self) -> Location:
        return Location(self.private, self.storage_options, owner_only=True)

    def check_locations(self) -> None:
        """Refuse layouts that would leak or loop: PHI beside outputs, outputs re-scanned."""
        source, output, private = self.input_location, self.output_location, self.private_location
        if overlaps(private, output) or overlaps(output, private):
            raise ConfigError("the private location must not be inside the output, nor contain it")
        if overlaps(output, source) or overlaps(source, output):
            raise ConfigError("the output must not be inside the input, nor contain it")
        if overlaps(private, source) or overlaps(source, private):
            raise ConfigError("the private location must not be inside the input, nor contain it")

    def partition_size_for(self, n_files: int, n_threads: int) -> int:
        """Files per task: the user's choice, else enough tasks to keep every thread busy."""
        if self.partition_size:
            return self.partition_size
        per_thread = -(-n_files // max(1, 4 * n_threads))
        return max(1, min(MAX_PARTITION_SIZE, per_thread))


#: ``pixels`` is the ``[pixels]`` table (rules.PixelOptions); it lands in ``profile``.
_FILE_KEYS = ({f.name for f in fields(RunConfig)} - {"profile"}) | {"pixels"}


def read_config_file(path: str) -> dict[str, Any]:
    """Settings from a TOML or JSON file; unknown keys are an error, not silently ignored."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = source.read_text()
    try:
        data = json.loads(text) if source.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid: {error}") from None
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"unknown config keys in {path}: {', '.join(unknown)}")
    return data


def build_config(file_settings: dict[str, Any], flags: dict[str, Any]) -> RunConfig:
    """Flags given on the command line win over the file; unset flags are None."""
    merged = dict(file_settings)
    merged.update({k: v for k, v in flags.items() if v is not None})
    if "pixels" in merged:
        merged["profile"] = ProfileOptions(pixels=pixel_options_from(merged.pop("pixels")))
    if "freetext" in merged:
        merged["freetext"] = freetext_options_from(merged["freetext"])
    try:
        return RunConfig(**merged)
    except TypeError as error:
        raise ConfigError(str(error)) from None
