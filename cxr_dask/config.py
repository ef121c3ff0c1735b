"""The settings of ``run`` and ``verify``: config file, then command-line flags, checked up front.

Everything a user can get wrong (a missing location, a wrong type or an unknown key in
the config file, a private location inside the public output) is caught here, before
any cluster starts, as one line (exit status 2).

The schema is stated once, as dataclasses: :data:`TABLES` maps each table of the file
to the dataclass whose fields are its keys (types from the annotations, ranges and the
README's text from the fields' metadata); :mod:`cxr_dask.settings` checks a file
against them. The run settings sit at the top level of the file or in ``[run]``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_dask.deid.freetext import FreeTextOptions
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.errors import ConfigError
from cxr_dask.settings import doc, keys_of, markdown_table, read_table, reference_rows, unknown_key
from cxr_dask.storage import Location, overlaps

#: Partitions never hold more files than this (400,000 files -> 2,000 tasks a pass).
MAX_PARTITION_SIZE = 200

_LOCATION = "fsspec URL or local path of the {}; the command's argument wins"


@dataclass(frozen=True)
class ClusterSettings:
    """Where a command's Dask work runs: what ``cluster.connect`` and ``cluster.Starting`` read.

    Built from ``run``'s settings (``RunConfig.cluster``) or ``verify``'s
    (``VerifySettings.cluster``), so the cluster needs neither command's locations.
    """

    #: Address of an existing scheduler; None starts a LocalCluster of the settings below.
    scheduler: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    #: Where the LocalCluster serves its dashboard; None serves none.
    dashboard_address: str | None = ":8787"

    def __post_init__(self) -> None:
        for name in ("workers", "threads_per_worker"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")


@dataclass(frozen=True)
class RunConfig:
    """What ``cxr-dask run`` needs; locations are fsspec URLs or local paths."""

    input: str = field(metadata=doc(_LOCATION.format("DICOM archive (INPUT)")))
    output: str = field(metadata=doc(_LOCATION.format("research dataset (OUTPUT)")))
    private: str = field(metadata=doc(_LOCATION.format("crosswalk, secret and audit (`--private`, PHI)")))
    workers: int = field(default=2, metadata=doc("LocalCluster worker processes (`--workers`)", minimum=1))
    threads_per_worker: int = field(default=1, metadata=doc("threads per worker (`--threads-per-worker`)", minimum=1))
    scheduler: str | None = field(
        default=None, metadata=doc("address of an existing Dask scheduler instead of a LocalCluster (`--scheduler`)")
    )
    partition_size: int | None = field(
        default=None,
        metadata=doc(
            f"files per task (`--partition-size`); unset: enough tasks for every thread, at most {MAX_PARTITION_SIZE}",
            minimum=1,
        ),
    )
    memory_limit: str = field(default="auto", metadata=doc('memory limit of each LocalCluster worker, e.g. `"4GiB"`'))
    dashboard_address: str | None = field(default=":8787", metadata=doc("where the LocalCluster serves its dashboard"))
    progress: bool = field(default=True, metadata=doc("show a progress bar (`--progress`, `--no-progress`)"))
    retries: int = field(default=2, metadata=doc("times Dask reruns a task whose worker died", minimum=0))
    # May hold keys (s3fs ``key``/``secret``): never in repr, so never in a log line.
    storage_options: dict[str, Any] = field(
        default_factory=dict,
        repr=False,
        metadata=doc("fsspec options for the three locations (`--storage-options`); never echoed", secret=True),
    )
    report: str | None = field(
        default=None, metadata=doc("save Dask's performance report of the run to this HTML file (`--report`)")
    )
    profile: ProfileOptions = field(default_factory=ProfileOptions)
    #: ``[freetext]``: k of the k-patient rule and the site's own keep list (deid/freetext.py).
    freetext: FreeTextOptions = field(default_factory=FreeTextOptions)

    def __post_init__(self) -> None:
        _require_locations({name: getattr(self, name) for name in ("input", "output", "private")})
        for name in ("workers", "threads_per_worker"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.partition_size is not None and self.partition_size < 1:
            raise ConfigError("partition_size must be at least 1")
        if self.retries < 0:
            raise ConfigError("retries must be 0 or more")
        self.check_locations()

    @property
    def cluster(self) -> ClusterSettings:
        """The run's cluster: a LocalCluster of ``workers``, or ``scheduler``'s."""
        return ClusterSettings(
            scheduler=self.scheduler,
            workers=self.workers,
            threads_per_worker=self.threads_per_worker,
            memory_limit=self.memory_limit,
            dashboard_address=self.dashboard_address,
        )

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

    def task_sizes_for(self, n_files: int, n_threads: int) -> list[int]:
        """Files per task, task by task: the user's ``partition_size`` for every task, else
        ``partition_size_for``'s for all but the last wave (one task a thread), whose files
        go in tasks a quarter that size (``last_wave_split``)."""
        size = self.partition_size_for(n_files, n_threads)
        if self.partition_size:
            return [min(size, n_files - start) for start in range(0, n_files, size)]
        return last_wave_split(n_files, size, n_threads)


#: The last wave of a pass (one task a thread) is cut into this many times as many tasks.
LAST_WAVE_PIECES = 4


def last_wave_split(n_files: int, size: int, n_threads: int) -> list[int]:
    """Tasks of ``size`` files, but the last ``n_threads`` of them cut in ``LAST_WAVE_PIECES``.

    Tasks end at different times (a worker started later, a file was bigger, the machine
    is shared); the worker whose last task ends first then idles until the others' end,
    up to a whole task: 25 films, 0.5 s, in a run of 200 films over 2 workers, or minutes
    with 200-file tasks. Small tasks at the end bound that wait to a quarter of a task,
    for ``3 x n_threads`` more tasks in all (Dask runs a bag's partitions in order).
    """
    whole = max(0, -(-n_files // size) - n_threads)
    sizes = [size] * whole
    rest = n_files - whole * size
    pieces = min(rest, n_threads * LAST_WAVE_PIECES)
    if pieces:
        each, more = divmod(rest, pieces)
        sizes += [each + 1] * more + [each] * (pieces - more)
    return sizes


@dataclass(frozen=True)
class VerifySettings:
    """``[verify]``: how ``cxr-dask verify`` reads (its locations are the run's: the same file serves both).

    Here rather than in ``cxr_dask.verify``, whose import (its checks and vocabularies)
    would cost every ``run`` client ~11 MB of peak RSS on top of the pipeline's;
    ``ocr_command`` and ``ocr_timeout`` feed ``verify.OcrSettings``.
    """

    max_listed: int = field(default=50, metadata=doc("findings listed (`--max-listed`)", minimum=1))
    workers: int | None = field(
        default=None,
        metadata=doc("read with a LocalCluster of N worker processes (`--workers`); unset: in this process", minimum=1),
    )
    threads_per_worker: int = field(default=1, metadata=doc("threads per worker of that LocalCluster", minimum=1))
    scheduler: str | None = field(default=None, metadata=doc("read on an existing Dask cluster (`--scheduler`)"))
    partition_size: int = field(default=100, metadata=doc("keys a Dask task reads, on a cluster", minimum=1))
    json: str | None = field(default=None, metadata=doc("also write the report as JSON to this file (`--json`)"))
    ocr_command: str = field(default="tesseract", metadata=doc("the Tesseract command the pixel check runs"))
    ocr_timeout: float = field(default=60.0, metadata=doc("seconds allowed for one OCR call", minimum=1))

    @property
    def on_cluster(self) -> bool:
        """Whether verify reads on Dask (``workers`` or ``scheduler`` set) rather than in this process."""
        return bool(self.workers or self.scheduler)

    @property
    def cluster(self) -> ClusterSettings:
        """Verify's cluster: ``scheduler``'s, else a LocalCluster of ``workers`` (2 unset), no dashboard."""
        return ClusterSettings(
            scheduler=self.scheduler,
            workers=self.workers or 2,
            threads_per_worker=self.threads_per_worker,
            dashboard_address=None,
        )


#: The tables of a config file and the dataclass whose fields are each one's keys. A
#: field whose type is another table's class is that table, not a key: ``RunConfig.profile``
#: is ``[profile]``, ``ProfileOptions.pixels`` is ``[pixels]``. ``run``'s keys may also
#: sit at the top level of the file (as every file before ``[run]`` had them).
TABLES: dict[str, type] = {
    "run": RunConfig,
    "profile": ProfileOptions,
    "pixels": PixelOptions,
    "freetext": FreeTextOptions,
    "verify": VerifySettings,
}
_TABLE_TYPES = frozenset(TABLES.values())


def parse_settings(data: object, source: str = "") -> dict[str, dict[str, Any]]:
    """The typed values a config file sets, table by table (an unset key is absent).

    Every key is checked against :data:`TABLES`; the first wrong one is a
    :class:`ConfigError` of one line naming the file and the key.
    """
    try:
        return _parse(data)
    except ConfigError as error:
        raise ConfigError(f"config {source}: {error}" if source else f"config: {error}") from None


def _parse(data: object) -> dict[str, dict[str, Any]]:
    """Table by table in the file's order, so the error is the first wrong key as written."""
    if not isinstance(data, Mapping):
        raise ConfigError("expected a table of settings at the top level")
    run_keys = {f.name for f in keys_of(RunConfig, _TABLE_TYPES)}
    parsed: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
    top: dict[str, Any] = {}
    for key, value in data.items():
        if key in TABLES:
            parsed[key] = read_table(value, TABLES[key], key, _TABLE_TYPES)
        elif key in run_keys:
            top |= read_table({key: value}, RunConfig, "", _TABLE_TYPES)
        else:
            raise ConfigError(unknown_key(str(key), str(key), run_keys | set(TABLES)))
    both = sorted(set(top) & set(parsed["run"]))
    if both:
        raise ConfigError(f"key '{both[0]}' is set both at the top level and in [run]")
    parsed["run"] |= top
    return parsed


def read_config_file(path: str) -> dict[str, Any]:
    """Settings from a TOML or JSON file, checked (unknown keys and wrong types are errors)."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = source.read_text()
    try:
        data = json.loads(text) if source.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"config {path} is not valid {'JSON' if source.suffix == '.json' else 'TOML'}: {error}"
        ) from None
    parse_settings(data, path)
    return data


def _require_locations(settings: Mapping[str, Any]) -> None:
    for name in ("input", "output", "private"):
        if not settings.get(name):
            raise ConfigError(f"the {name} location is required (an argument, or `{name}` in the config file)")


def _given(flags: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None}


def build_config(file_settings: Mapping[str, Any], flags: Mapping[str, Any], source: str = "") -> RunConfig:
    """The run's settings: the file's (checked), then every flag given (not None) over them."""
    tables = parse_settings(file_settings, source)
    profile = ProfileOptions(**tables["profile"], pixels=PixelOptions(**tables["pixels"]))
    run: dict[str, Any] = {"profile": profile, "freetext": FreeTextOptions(**tables["freetext"])}
    run |= tables["run"] | _given(flags)
    _require_locations(run)
    return RunConfig(**run)


@dataclass(frozen=True)
class VerifyConfig:
    """What ``cxr-dask verify`` needs: the run's locations and options, and its own settings."""

    input: str
    output: str
    private: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    settings: VerifySettings = field(default_factory=VerifySettings)


def build_verify_config(
    file_settings: Mapping[str, Any], locations: Mapping[str, Any], flags: Mapping[str, Any], source: str = ""
) -> VerifyConfig:
    """``locations`` (input, output, private, storage_options) and ``flags`` ([verify] keys) win over the file."""
    tables = parse_settings(file_settings, source)
    keys = ("input", "output", "private", "storage_options")
    run: dict[str, Any] = {key: tables["run"][key] for key in keys if key in tables["run"]}
    run |= _given(locations)
    _require_locations(run)
    return VerifyConfig(**run, settings=VerifySettings(**(tables["verify"] | _given(flags))))


def reference() -> Iterator[tuple[str, str, str, str]]:
    """Every key of the config file: ``(key, type, default, meaning)``, as the README lists them."""
    for name, cls in TABLES.items():
        yield from reference_rows(cls, "" if name == "run" else name, _TABLE_TYPES)


def reference_table() -> str:
    """The README's table of config file settings (``python -m cxr_dask.config`` prints it)."""
    return markdown_table(list(reference()))


if __name__ == "__main__":
    print(reference_table())
