"""The ``cxr-dask`` command: ``run``, ``verify``, ``review``, ``export-mappings``, ``synth``, ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr_dask.errors import ConfigError

if TYPE_CHECKING:
    from cxr_dask.config import RunConfig, VerifyConfig

PROG = "cxr-dask"
#: Exit status of a run the store failed (after its retries): rerunning the command resumes it.
STORAGE_FAILURE = 3
DEMO_PATIENTS = 40


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _size(text: str) -> tuple[int, int]:
    """``ROWSxCOLUMNS``, or the names ``small`` (256x256) and ``large`` (3000x2500)."""
    named = {"small": (256, 256), "large": (3000, 2500)}
    if text in named:
        return named[text]
    try:
        rows, columns = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("use ROWSxCOLUMNS, 'small' or 'large'") from None
    if rows < 16 or columns < 16:
        raise argparse.ArgumentTypeError("images must be at least 16x16")
    return rows, columns


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_positive_int, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--threads-per-worker", type=_positive_int, help="threads per worker (default 1)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--partition-size", type=_positive_int, help="files per task (default: automatic)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, help="show a progress bar (default: yes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of each pass")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="de-identify INPUT into OUTPUT (MIMIC-CXR layout)")
    run.add_argument("input", nargs="?", help="folder or URL of the DICOM archive (read only)")
    run.add_argument("output", nargs="?", help="folder or URL of the research dataset")
    run.add_argument("--private", help="folder or URL for the crosswalk, secret and audit (PHI)")
    run.add_argument("--config", help="TOML or JSON file with the settings (arguments and flags win)")
    run.add_argument(
        "--storage-options", type=_json_object, help='fsspec options as JSON, e.g. \'{"endpoint_url": "http://..."}\''
    )
    run.add_argument("--report", help="save Dask's performance report of the run to this HTML file (path or URL)")
    _add_cluster_flags(run)

    verify = commands.add_parser("verify", help="audit OUTPUT for PHI of INPUT; exit 1 on any finding")
    verify.add_argument("input", nargs="?", help="folder or URL of the DICOM archive the dataset was made from")
    verify.add_argument("output", nargs="?", help="folder or URL of the research dataset")
    verify.add_argument("--private", help="folder or URL holding the crosswalk")
    verify.add_argument("--config", help="the run's TOML or JSON file: its locations and [verify] (flags win)")
    verify.add_argument("--storage-options", type=_json_object, help="fsspec options as JSON")
    verify.add_argument("--max-listed", type=_positive_int, help="findings listed (default 50)")
    verify.add_argument("--workers", type=_positive_int, help="read with a LocalCluster of N worker processes")
    verify.add_argument("--scheduler", help="read on an existing Dask cluster, e.g. tcp://host:8786")
    verify.add_argument("--json", metavar="FILE", help="also write the report (findings, notes, counts, files) as JSON")
    mappings = commands.add_parser(
        "export-mappings", help="write the run's UID and patient id mappings for the MIDI-B validator (PHI)"
    )
    mappings.add_argument("private", help="folder or URL holding the crosswalk and secret")
    mappings.add_argument("dest", help="folder or URL for uid_mapping.csv and patid_mapping.csv (not inside OUTPUT)")
    mappings.add_argument("--output", help="the dataset (OUTPUT), so a destination inside it is refused")
    mappings.add_argument("--storage-options", type=_json_object, help="fsspec options as JSON")

    review = commands.add_parser("review", help="where a run's review page is (PHI: in PRIVATE), and its counts")
    review.add_argument("private", help="folder or URL given as --private to the run")
    review.add_argument("--run", help="run id (default: the latest run with a review page)")
    review.add_argument("--storage-options", type=_json_object, help="fsspec options as JSON")

    synth = commands.add_parser("synth", help="write a synthetic chest x-ray corpus with planted PHI")
    synth.add_argument("output", help="folder or URL to write to")
    synth.add_argument("--patients", type=_positive_int, default=20)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=_size, default=(256, 256), help="ROWSxCOLUMNS, small or large")
    synth.add_argument("--no-burned-in-text", action="store_true", help="no text painted into the pixels")

    demo = commands.add_parser("demo", help="synthesize a corpus and de-identify it (make run)")
    demo.add_argument("--workdir", default="out", help="folder for raw/, dataset/ and private/")
    demo.add_argument("--patients", type=_positive_int, default=DEMO_PATIENTS)
    _add_cluster_flags(demo)
    return parser


def _run_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "scheduler": args.scheduler,
        "partition_size": args.partition_size,
        "progress": args.progress,
    }


def run_config(args: argparse.Namespace) -> RunConfig:
    """``run``'s settings: the ``--config`` file's, then every argument and flag given over them."""
    from cxr_dask.config import build_config, read_config_file

    settings = read_config_file(args.config) if args.config else {}
    flags = _run_flags(args) | {
        "input": args.input,
        "output": args.output,
        "private": args.private,
        "storage_options": args.storage_options,
        "report": args.report,
    }
    return build_config(settings, flags, source=args.config or "")


def verify_config(args: argparse.Namespace) -> VerifyConfig:
    """``verify``'s settings: the file's locations, storage options and ``[verify]``, then the flags."""
    from cxr_dask.config import build_verify_config, read_config_file

    settings = read_config_file(args.config) if args.config else {}
    locations = {
        "input": args.input,
        "output": args.output,
        "private": args.private,
        "storage_options": args.storage_options,
    }
    flags = {"max_listed": args.max_listed, "workers": args.workers, "scheduler": args.scheduler, "json": args.json}
    return build_verify_config(settings, locations, flags, source=args.config or "")


def _execute(config: RunConfig, ends_process: bool = False) -> int:
    from cxr_dask import storage

    # What can refuse the run before any worker starts does: a missing bucket, a wrong
    # endpoint or refused credentials, a PRIVATE in use by another run. The workers then
    # start in the background while this process imports the passes and checks the
    # journal (an unfinished run of other locations refuses, and stops them again).
    storage.check_locations(config.input_location, config.output_location, config.private_location)
    # The workers are forked from one process that imported distributed and pydicom: this
    # one, where ``_fork_server_ahead`` prepared it, forked as soon as it has imported them
    # (``workerenv.fork_server_here``), before any thread starts; else, for two workers or
    # more, one spawned by ``Starting`` (``workerenv.fork_server``, which decides); a single
    # worker is then spawned itself (a spawned server would cost it ~0.2 s more CPU).
    from cxr_dask import cluster, heap, lock, startup, workerenv

    local = not config.cluster.scheduler
    if local and workerenv.may_fork_here():
        cluster.pydicom_without_requests()  # before the fork, which shares it
    fork = local and (workerenv.fork_server_here() or config.cluster.workers > 1)

    with (
        lock.RunClaim(config.private_location, config.input, config.output) as claim,
        cluster.Starting(config.cluster, preload=cluster.WORKER_PRELOAD, fork=fork) as starting,
        _quiet(),  # pydicom imported above where the fork shares it, else here
    ):
        # pyarrow (~0.2 s) after the workers started spawning, not before
        heap.load_arrow()  # its allocators, read as pyarrow loads: the client's memory (``cxr_dask.heap``)
        cluster.arrow_without_pandas()  # the CLI's process is the client: it holds only Arrow columns
        from cxr_dask import pipeline

        pipeline.client_memory_pool()  # the process's Arrow pool: the CLI's to choose, not a library call's
        startup.end(freeze=ends_process)  # the start-up's imports done
        claim.check()
        client = starting.client(workers=1)  # pass 1 starts on the first worker up
        if ends_process:
            starting.leave_to_exit()
        print(f"dashboard: {client.dashboard_link}", flush=True)
        # workers forked from this process share its environment: its storage check holds for them
        shared = local and workerenv.serves_from_here()
        with _performance_report(config.report, config.storage_options):
            summary = pipeline.run(client, config, claim, check_workers=not shared)
    print("\n".join(summary.lines()), flush=True)
    if config.report:
        print(f"performance report: {config.report}", flush=True)
    if summary.storage_errors:
        print(
            f"{PROG}: {summary.storage_errors} files could not be read or written (storage errors after retries); "
            "rerun the same command to retry them",
            file=sys.stderr,
            flush=True,
        )
        return STORAGE_FAILURE
    return 0


@contextmanager
def _quiet() -> Iterator[None]:
    """``privacy.quiet_pydicom``, imported only now: pydicom is the CLI's largest import
    after distributed, and nothing before this block reads a DICOM file."""
    from cxr_dask.cluster import pydicom_without_requests

    pydicom_without_requests()
    from cxr_dask.privacy import quiet_pydicom

    with quiet_pydicom():
        yield


@contextmanager
def _performance_report(target: str | None, storage_options: dict[str, Any]) -> Iterator[None]:
    """Dask's performance report (task stream, profiles, bandwidth) of the run, as HTML.

    ``distributed.performance_report`` writes a local file; a URL target (``s3://...``)
    is written there first and then uploaded with one PUT.
    """
    if not target:
        yield
        return
    import tempfile

    from distributed import performance_report

    from cxr_dask import storage

    location = storage.Location(target, storage_options)
    if location.is_local:
        Path(location.root).parent.mkdir(parents=True, exist_ok=True)
        with performance_report(filename=location.root):
            yield
        return
    with tempfile.TemporaryDirectory() as folder:
        local = str(Path(folder) / "report.html")
        with performance_report(filename=local):
            yield
        parent, name = target.rstrip("/").rsplit("/", 1)
        storage.write_atomic(storage.Location(parent, storage_options), name, Path(local).read_bytes())


def _fork_server_ahead(scheduler: str | None) -> None:
    """Prepare this process to fork its workers' server once it has imported distributed
    and pydicom (``workerenv.fork_server_ahead``: numpy, which distributed imports, then
    starts no thread here) when a LocalCluster is asked for (no ``--scheduler``); before
    numpy is imported, so before the settings when the command line says as much. A run
    then refused (settings, storage checks, the lock) stops a server started
    (``workerenv.stop_fork_server``)."""
    if scheduler is None:
        from cxr_dask import workerenv

        workerenv.fork_server_ahead()


def command_run(args: argparse.Namespace) -> int:
    """``run``: its imports with ``startup.begin``'s settings, until ``_execute`` has done
    them (``startup.end``; here, whatever happens)."""
    from cxr_dask import startup, workerenv

    startup.begin()
    if args.config is None:  # else the file may name a scheduler: read first
        _fork_server_ahead(args.scheduler)
    try:
        config = run_config(args)
        if args.config is not None:
            _fork_server_ahead(config.cluster.scheduler)
        return _execute(config, ends_process=args.ends_process)
    except BaseException:  # refused (settings, storage, lock) or failed: no server left importing
        workerenv.stop_fork_server()
        raise
    finally:
        startup.end()


def command_verify(args: argparse.Namespace) -> int:
    """Exit 0 when clean, 1 on any finding; the report never prints a PHI value."""
    from cxr_dask.storage import Location
    from cxr_dask.verify import OcrSettings, verify

    config = verify_config(args)
    settings, options = config.settings, config.storage_options
    locations = (Location(config.input, options), Location(config.output, options), Location(config.private, options))
    ocr = OcrSettings(command=settings.ocr_command, timeout=settings.ocr_timeout)
    if settings.on_cluster:
        from cxr_dask.pipeline_verify import verify_on_cluster

        report = verify_on_cluster(settings.cluster, *locations, ocr=ocr, partition_size=settings.partition_size)
    else:
        report = verify(*locations, ocr=ocr)
    print("\n".join(report.lines(settings.max_listed)), flush=True)
    if settings.json:
        report.write_json(settings.json)
    return 0 if report.ok else 1


def command_review(args: argparse.Namespace) -> int:
    """Print where the review page of a run is and what it lists; exit 2 when there is none."""
    from cxr_dask import review
    from cxr_dask.storage import Location

    where, summary = review.locate(Location(args.private, args.storage_options or {}), args.run)
    print("\n".join(summary.lines(where)), flush=True)
    return 0


def command_export_mappings(args: argparse.Namespace) -> int:
    """The id mappings are PHI: a destination inside OUTPUT is refused (exit 2)."""
    from cxr_dask.storage import Location
    from cxr_dask.verify.mappings import export_mappings

    options = args.storage_options or {}
    output = Location(args.output, options) if args.output else None
    uids, patients = export_mappings(Location(args.private, options), Location(args.dest, options), output)
    print(f"wrote {uids} UIDs and {patients} patient ids to {args.dest} (PHI: keep it with PRIVATE)")
    return 0


def command_synth(args: argparse.Namespace) -> int:
    from cxr_dask.testing.synth import synthesize

    rows, columns = args.size
    corpus = synthesize(
        args.output,
        patients=args.patients,
        seed=args.seed,
        rows=rows,
        columns=columns,
        burned_in_text=not args.no_burned_in_text,
    )
    n_studies = len({image.study_instance_uid for image in corpus.images})
    print(f"wrote {len(corpus.images)} images of {n_studies} studies, {args.patients} patients to {args.output}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from cxr_dask.testing.synth import synthesize

    workdir = Path(args.workdir)
    raw = workdir / "raw"
    if not raw.exists():
        corpus = synthesize(str(raw), patients=args.patients, seed=7, burned_in_text=True)
        print(f"synthesized {len(corpus.images)} images of {args.patients} patients into {raw}")
    from cxr_dask.config import build_config

    flags = _run_flags(args) | {
        "input": str(raw),
        "output": str(workdir / "dataset"),
        "private": str(workdir / "private"),
    }
    return _execute(build_config({}, flags), ends_process=args.ends_process)


COMMANDS = {
    "run": command_run,
    "verify": command_verify,
    "review": command_review,
    "export-mappings": command_export_mappings,
    "synth": command_synth,
    "demo": command_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The command. As the program itself (no ``argv``), a finished command ends the process
    without tearing the interpreter down: every output is written and closed by then, and
    the teardown (some 200,000 objects, Dask's and Arrow's thread pools) is ~0.5 s of CPU."""
    code = _main(argv)
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.ends_process = argv is None  # main() ends the process with os._exit when the command is done
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        # ``run`` keeps pydicom quiet from its cluster's start (``_execute``), which it
        # reaches before importing pydicom; every other command from here
        with nullcontext() if args.command == "run" else _quiet():
            return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        from cxr_dask.storage import is_storage_error

        if not is_storage_error(error):
            raise
        # The type only: a storage message can quote a key, and keys can carry PHI.
        print(
            f"{PROG}: storage failed after retries ({type(error).__name__}); nothing finished is lost: "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return STORAGE_FAILURE


if __name__ == "__main__":
    sys.exit(main())
