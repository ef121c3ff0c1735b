"""The config file: every setting typed and reachable, a wrong one is one line and exit status 2.

No cluster: the CLI's own parsing and merging (``cli.run_config``, ``cli.verify_config``)
are called directly, and ``cli.main`` stops at the settings before anything starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cxr_dask import cli
from cxr_dask.config import RunConfig, VerifySettings, build_config, reference, reference_table
from cxr_dask.deid.freetext import FreeTextOptions
from cxr_dask.deid.profile import ProfileOptions
from cxr_dask.deid.rules import PixelOptions, RegionRule
from cxr_dask.errors import ConfigError
from cxr_dask.verify import OcrSettings

ROOT = Path(__file__).resolve().parent.parent

#: A value other than the default for every key of every table.
EVERY_SETTING = """
input = "{root}/raw"
output = "{root}/dataset"
private = "{root}/private"
report = "{root}/report.html"
storage_options = {{ anon = true }}

[run]
workers = 3
threads_per_worker = 2
scheduler = "tcp://127.0.0.1:8786"
partition_size = 7
memory_limit = "4GiB"
dashboard_address = ":0"
progress = false
retries = 0

[profile]
retain_modified_dates = false
clean_descriptors = ["StudyDescription"]

[pixels]
enabled = false
strict = true
jpeg2000_preview = true
max_frames = 4
allowed = ["l", "Portable"]

[[pixels.rules]]
name = "banner"
regions = [[0, 0, 300, 40]]
manufacturer = "^ACME"
model = "DR 9000"
rows = 3000
columns = 2500

[freetext]
min_patients = 25
keep = ["PA"]

[verify]
max_listed = 5
workers = 4
threads_per_worker = 2
scheduler = "tcp://127.0.0.1:8787"
partition_size = 9
json = "{root}/verify.json"
ocr_command = "/usr/bin/tesseract"
ocr_timeout = 30
"""


def _file(tmp_path: Path, text: str, name: str = "run.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _args(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def _keys(table: dict, prefix: str = "") -> set[str]:
    """The dotted keys a parsed file sets (a list of tables as ``key[]``, as the reference names them)."""
    keys = set()
    for key, value in table.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict) and where != "storage_options":
            keys |= _keys(value, "" if where == "run" else f"{where}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            keys |= {where} | _keys(value[0], f"{where}[].")
        else:
            keys.add(where)
    return keys


def test_every_setting_is_reachable_from_the_file(tmp_path):
    text = EVERY_SETTING.format(root=tmp_path)
    assert _keys(tomllib.loads(text)) == {key for key, *_ in reference()}  # the file names every key
    path = _file(tmp_path, text)
    run = cli.run_config(_args("run", "--config", path))
    assert run == RunConfig(
        input=f"{tmp_path}/raw",
        output=f"{tmp_path}/dataset",
        private=f"{tmp_path}/private",
        workers=3,
        threads_per_worker=2,
        scheduler="tcp://127.0.0.1:8786",
        partition_size=7,
        memory_limit="4GiB",
        dashboard_address=":0",
        progress=False,
        retries=0,
        storage_options={"anon": True},
        report=f"{tmp_path}/report.html",
        profile=ProfileOptions(
            retain_modified_dates=False,
            clean_descriptors=frozenset({"StudyDescription"}),
            pixels=PixelOptions(
                enabled=False,
                strict=True,
                jpeg2000_preview=True,
                max_frames=4,
                allowed=frozenset({"L", "PORTABLE"}),
                rules=(RegionRule("banner", ((0, 0, 300, 40),), "^ACME", "DR 9000", 3000, 2500),),
            ),
        ),
        freetext=FreeTextOptions(min_patients=25, keep=("PA",)),
    )
    verify = cli.verify_config(_args("verify", "--config", path))
    assert (verify.input, verify.output, verify.private) == (run.input, run.output, run.private)
    assert verify.storage_options == {"anon": True}
    assert verify.settings == VerifySettings(
        max_listed=5,
        workers=4,
        threads_per_worker=2,
        scheduler="tcp://127.0.0.1:8787",
        partition_size=9,
        json=f"{tmp_path}/verify.json",
        ocr_command="/usr/bin/tesseract",
        ocr_timeout=30.0,
    )


def test_arguments_and_flags_win_over_the_file(tmp_path):
    path = _file(tmp_path, EVERY_SETTING.format(root=tmp_path))
    flags = ("--workers", "1", "--threads-per-worker", "3", "--scheduler", "tcp://other:1", "--partition-size", "11")
    args = _args(
        "run",
        f"{tmp_path}/in",
        f"{tmp_path}/out",
        "--private",
        f"{tmp_path}/vault",
        "--config",
        path,
        "--progress",
        "--storage-options",
        '{"anon": false}',
        "--report",
        f"{tmp_path}/other.html",
        *flags,
    )
    run = cli.run_config(args)
    assert (run.input, run.output, run.private) == (f"{tmp_path}/in", f"{tmp_path}/out", f"{tmp_path}/vault")
    assert (run.workers, run.threads_per_worker, run.scheduler, run.partition_size) == (1, 3, "tcp://other:1", 11)
    assert run.progress is True and run.storage_options == {"anon": False} and run.report == f"{tmp_path}/other.html"
    assert run.memory_limit == "4GiB" and run.profile.pixels.strict  # not flags: the file's
    assert cli.run_config(_args("run", "--config", path, "--no-progress")).progress is False

    verify = cli.verify_config(
        _args("verify", f"{tmp_path}/in", "--config", path, "--max-listed", "2", "--workers", "1", "--json", "x.json")
    )
    assert verify.input == f"{tmp_path}/in" and verify.output == f"{tmp_path}/dataset"  # one argument given
    assert (verify.settings.max_listed, verify.settings.workers, verify.settings.json) == (2, 1, "x.json")
    assert verify.settings.partition_size == 9


def test_defaults_without_a_file(tmp_path):
    args = _args("run", f"{tmp_path}/a", f"{tmp_path}/b", "--private", f"{tmp_path}/c")
    assert cli.run_config(args) == RunConfig(f"{tmp_path}/a", f"{tmp_path}/b", f"{tmp_path}/c")
    verify = cli.verify_config(_args("verify", "a", "b", "--private", "c"))
    assert verify.settings == VerifySettings() and verify.storage_options == {}
    ocr = OcrSettings()  # verify's own defaults, which [verify] restates
    assert (VerifySettings().ocr_command, VerifySettings().ocr_timeout) == (ocr.command, ocr.timeout)


BAD = {
    "a string for an integer": ('workers = "two"', "key 'workers': expected an integer, got \"two\""),
    "a quoted number": ('partition_size = "5"', "key 'partition_size': expected an integer, got \"5\""),
    "a string for a boolean": ('progress = "no"', "key 'progress': expected true or false, got \"no\""),
    "an integer for a boolean": ("[pixels]\nstrict = 1", "key 'pixels.strict': expected true or false, got 1"),
    "a float for an integer": ("[run]\nworkers = 1.5", "key 'run.workers': expected an integer, got 1.5"),
    "a boolean for an integer": ("[freetext]\nmin_patients = true", "key 'freetext.min_patients': expected an"),
    "out of range": ("threads_per_worker = 0", "key 'threads_per_worker': must be at least 1, got 0"),
    "negative retries": ("retries = -1", "key 'retries': must be at least 0, got -1"),
    "a word for a list": ('[freetext]\nkeep = "PA"', "key 'freetext.keep': expected a list of strings, got \"PA\""),
    "a number in a list": ("[pixels]\nallowed = ['L', 3]", "key 'pixels.allowed[1]': expected a string, got 3"),
    "a value for a table": ("pixels = true", "key 'pixels': expected a table, got true"),
    "a rule without a name": ("[[pixels.rules]]\nregions = [[0, 0, 1, 1]]", "key 'pixels.rules[0].name' is required"),
    "an empty region": (
        "[[pixels.rules]]\nname = 'a'\nregions = [[0, 0, 10, 0]]",
        "key 'pixels.rules[0]': regions: a negative offset or an empty region",
    ),
    "a bad pattern": (
        "[[pixels.rules]]\nname = 'a'\nregions = [[0, 0, 1, 1]]\nmodel = '('",
        "key 'pixels.rules[0].model': not a valid regular expression",
    ),
    "not a keyword": (
        "[profile]\nclean_descriptors = ['StudyDescriptoin']",
        "key 'profile.clean_descriptors': not a DICOM keyword: StudyDescriptoin",
    ),
    "a string for a number": (
        '[verify]\nocr_timeout = "60"',
        "key 'verify.ocr_timeout': expected a number, got \"60\"",
    ),
    "a secret is not echoed": (
        'storage_options = "AKIASECRET"',
        "key 'storage_options': expected a table, got a string",
    ),
    "a misspelt key": ("wrokers = 3", "unknown key 'wrokers' (did you mean 'workers'?)"),
    "a misspelt table": ("[pixel]\nstrict = true", "unknown key 'pixel' (did you mean 'pixels'?)"),
    "a misspelt verify key": ("[verify]\nmax_list = 3", "unknown key 'verify.max_list' (did you mean 'max_listed'?)"),
    "a misspelt rule key": (
        "[[pixels.rules]]\nname = 'a'\nregion = [[0, 0, 1, 1]]",
        "unknown key 'pixels.rules[0].region' (did you mean 'regions'?)",
    ),
    "a key set twice": ("workers = 2\n[run]\nworkers = 3", "key 'workers' is set both at the top level and in [run]"),
    "not TOML": ("workers = ", "is not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_wrong_setting_is_one_line_and_exit_status_2(tmp_path, capsys, case):
    text, message = BAD[case]
    path = _file(tmp_path, text)
    for command in ("run", "verify"):
        assert cli.main([command, "a", "b", "--private", "c", "--config", path]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"cxr-dask: error: config {path}") and message in error, error
        assert error.count("\n") == 1 and "AKIASECRET" not in error


def test_json_files_are_checked_the_same_way(tmp_path):
    path = _file(tmp_path, json.dumps({"workers": None, "pixels": {"enabled": "false"}}), "run.json")
    with pytest.raises(ConfigError, match=r"key 'workers': expected an integer, got null$"):
        cli.run_config(_args("run", "a", "b", "--private", "c", "--config", path))
    path = _file(tmp_path, json.dumps({"partition_size": None, "pixels": {"enabled": False}}), "run.json")
    run = cli.run_config(_args("run", f"{tmp_path}/a", f"{tmp_path}/b", "--private", f"{tmp_path}/c", "--config", path))
    assert run.partition_size is None and run.profile.pixels.enabled is False


def test_a_location_missing_everywhere_is_one_line(tmp_path, capsys):
    assert cli.main(["run", "a", "b"]) == 2
    assert capsys.readouterr().err == (
        "cxr-dask: error: the private location is required (an argument, or `private` in the config file)\n"
    )
    assert cli.main(["verify", "--config", _file(tmp_path, "input = 'a'\n")]) == 2
    assert "the output location is required" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="key 'workers': expected an integer"):
        build_config({"workers": "2"}, {"workers": 2})  # a wrong file value is wrong even under a flag


def test_the_program_exits_2_with_one_line(tmp_path):
    """Once through the real process exit (``main()`` ends with ``os._exit``)."""
    path = _file(tmp_path, 'workers = "two"\n')
    done = subprocess.run(
        [sys.executable, "-m", "cxr_dask.cli", "run", "--config", path],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == f"cxr-dask: error: config {path}: key 'workers': expected an integer, got \"two\"\n"


def test_the_readme_lists_every_setting_with_its_type_and_default():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- config-settings: begin -->\n", "<!-- config-settings: end -->"
    listed = readme[readme.index(begin) + len(begin) : readme.index(end)].strip()
    assert listed == reference_table(), "regenerate with: python -m cxr_dask.config"
