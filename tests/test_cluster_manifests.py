"""cluster/: every manifest against the Kubernetes and dask-kubernetes schemas, every
command against the real command-line parsers (ours, ``dask worker``, ``dask scheduler``).

Unknown fields are errors here (the API server would silently prune them, so a typo
such as ``resource:`` would deploy without limits): the operator's CRD schemas get
``additionalProperties: false`` wherever they list properties, and core objects are
checked with kubernetes-validate in strict mode.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import dask.config
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dask.utils import parse_bytes
from distributed.cli.dask_scheduler import main as dask_scheduler_cli
from distributed.cli.dask_worker import main as dask_worker_cli

from cxr_dask.cli import build_parser
from cxr_dask.cluster import WORKER_MALLOC_ENV

ROOT = Path(__file__).parent.parent
CLUSTER = ROOT / "cluster"
BASE = CLUSTER / "k8s" / "base"
K8S_VERSION = kubernetes_validate.utils.latest_version()
VARIABLE = re.compile(r"\$\(([A-Z_][A-Z0-9_]*)\)")
#: Set by the dask-kubernetes operator in the pods it makes (controller.py).
OPERATOR_ENV = {"DASK_SCHEDULER_ADDRESS": "tcp://cxr-dask-run-scheduler.ns.svc.cluster.local:8786"}
WORKER_ENV = OPERATOR_ENV | {"DASK_WORKER_NAME": "cxr-dask-run-default-worker-0"}


def _crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the operator's CRD, as shipped in the dask-kubernetes wheel."""
    (package,) = importlib.util.find_spec("dask_kubernetes").submodule_search_locations
    path = Path(package) / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds" / f"{kind}.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    """Reject unknown fields where the schema lists the known ones."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_crd(document: dict[str, Any], kind: str) -> None:
    body = {k: v for k, v in document.items() if k not in {"apiVersion", "kind", "metadata"}}
    jsonschema.Draft7Validator(_crd_schema(kind)).validate(body)


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def _validate_core(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _params(path: Path) -> dict[str, str]:
    lines = [line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {key: value for key, value in lines}


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args; an unknown variable is an error here."""

    def value(match: re.Match) -> str:
        assert match.group(1) in env, f"$({match.group(1)}) is set by nothing"
        return env[match.group(1)]

    return [VARIABLE.sub(value, arg) for arg in args]


@pytest.fixture(scope="module")
def daskjob() -> dict[str, Any]:
    (document,) = _load(BASE / "daskjob.yaml")
    return document


def _container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in spec["containers"] if c["name"] == name]
    return container


# --- schemas ------------------------------------------------------------------------------


def test_daskjob_is_valid_against_the_operator_crd(daskjob):
    assert daskjob["apiVersion"] == "kubernetes.dask.org/v1" and daskjob["kind"] == "DaskJob"
    _validate_crd(daskjob, "daskjob")
    _validate_crd({"spec": daskjob["spec"]["cluster"]["spec"]}, "daskcluster")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "cluster", "spec", "worker", "replica"], 8),
        (["spec", "cluster", "spec", "worker", "spec", "containers", 0, "resource"], {"limits": {"cpu": "2"}}),
        (["spec", "job", "spec", "containers", 0, "args"], "cxr-dask run"),
    ],
)
def test_the_crd_check_catches_typos(daskjob, path, value):
    broken = copy.deepcopy(daskjob)
    target = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate_crd(broken, "daskjob")


def test_every_pod_of_the_job_is_a_valid_pod(daskjob):
    specs = [
        daskjob["spec"]["job"]["spec"],
        daskjob["spec"]["cluster"]["spec"]["worker"]["spec"],
        daskjob["spec"]["cluster"]["spec"]["scheduler"]["spec"],
    ]
    for spec in specs:
        _validate_core(_pod(spec))
        assert spec["securityContext"]["runAsNonRoot"] is True
    service = daskjob["spec"]["cluster"]["spec"]["scheduler"]["service"]
    _validate_core({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": service})
    # The operator names the job's DaskCluster after the DaskJob: the selector must match it.
    assert service["selector"]["dask.org/cluster-name"] == daskjob["metadata"]["name"]


def test_core_objects_are_valid():
    for path in sorted(CLUSTER.rglob("*.yaml")):
        if "helm" in path.parts or path.name == "kustomization.yaml":
            continue
        for document in _load(path):
            if document["apiVersion"].startswith("kubernetes.dask.org/"):
                continue
            _validate_core(document)


def test_kustomizations_name_files_that_exist_and_set_the_same_parameters():
    for path in sorted((CLUSTER / "k8s").rglob("kustomization.yaml")):
        kustomization = yaml.safe_load(path.read_text())
        assert kustomization["kind"] == "Kustomization"
        for resource in kustomization.get("resources", []):
            assert (path.parent / resource).exists(), (path, resource)
        for generator in kustomization.get("configMapGenerator", []):
            for env_file in generator["envs"]:
                params = _params(path.parent / env_file)
                assert set(params) == set(_params(BASE / "params.env")), path
                assert all(value.startswith("s3://") for value in params.values())
        for generator in kustomization.get("secretGenerator", []):
            for env_file in generator["envs"]:
                assert (path.parent / f"{env_file}.example").exists()
                assert env_file in (path.parent / ".gitignore").read_text()


# --- commands -----------------------------------------------------------------------------


def test_job_command_parses_with_the_cli_parser_and_the_image_runs_it(daskjob):
    job = _container(daskjob["spec"]["job"]["spec"], "job")
    assert "command" not in job  # the image's entrypoint passes args through
    args = _expand(job["args"], _params(BASE / "params.env") | OPERATOR_ENV)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert args[0] in scripts
    parsed = build_parser().parse_args(args[1:])
    assert parsed.command == "run"
    assert parsed.input.startswith("s3://") and parsed.output.startswith("s3://") and parsed.private.startswith("s3://")
    assert parsed.scheduler == OPERATOR_ENV["DASK_SCHEDULER_ADDRESS"]
    assert parsed.report and parsed.progress is False
    env_from = {source.get("configMapRef", source.get("secretRef"))["name"] for source in job["envFrom"]}
    assert env_from == {"cxr-dask-params", "cxr-dask-aws"}


def test_worker_and_scheduler_commands_parse_with_dask_own_parsers(daskjob):
    worker = _container(daskjob["spec"]["cluster"]["spec"]["worker"]["spec"], "worker")
    args = _expand(worker["args"], WORKER_ENV)
    assert args[:2] == ["dask", "worker"]
    context = dask_worker_cli.make_context("dask worker", args[2:])
    threads, memory = context.params["nthreads"], parse_bytes(context.params["memory_limit"])
    limits = worker["resources"]["limits"]
    assert threads == int(limits["cpu"])
    assert memory < _quantity(limits["memory"])  # room for the nanny and the process itself
    assert worker["resources"]["requests"] == limits  # Guaranteed QoS: not the first evicted
    assert _pre_spawn_environ(worker["env"]) == _pre_spawn_environ(HELM_WORKER_ENV)
    scheduler = _container(daskjob["spec"]["cluster"]["spec"]["scheduler"]["spec"], "scheduler")
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    dask_scheduler_cli.make_context("dask scheduler", scheduler["args"][2:])


HELM_WORKER_ENV = yaml.safe_load((CLUSTER / "helm" / "dask-values.yaml").read_text())["worker"]["env"]


def _pre_spawn_environ(env: list[dict[str, str]]) -> dict[str, str]:
    """The environment the nanny spawns a worker with, as dask reads it from the pod's:
    the allocator settings of the LocalCluster ``cxr-dask run`` starts (cluster.py)."""
    (value,) = [item["value"] for item in env if item["name"] == "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"]
    read = dask.config.collect_env({"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": value})
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", config=read)
    assert {key: environ[key] for key in WORKER_MALLOC_ENV} == WORKER_MALLOC_ENV
    return environ


def _quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def _dockerfile() -> list[str]:
    """Instructions with their continuation lines joined."""
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_is_slim_non_root_with_tesseract_and_a_passthrough_entrypoint(daskjob):
    lines = _dockerfile()
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.(1[1-9])-slim", base)
    assert any("tesseract-ocr" in line for line in lines if line.startswith("RUN "))
    assert any(line.startswith("RUN pip install .") for line in lines)
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.isdigit() and int(user) != 0
    for spec in (daskjob["spec"]["job"]["spec"], daskjob["spec"]["cluster"]["spec"]["worker"]["spec"]):
        assert spec["securityContext"]["runAsUser"] == int(user)
    (entrypoint,) = [json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("ENTRYPOINT ")]
    assert entrypoint[0] == "tini" and entrypoint[-1] == "--"
    (cmd,) = [json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("CMD ")]
    assert cmd[0] in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(cmd[1:])
    assert exited.value.code == 0


# --- the dask Helm chart ----------------------------------------------------------------------

#: The keys of the dask chart's values.yaml these values use (github.com/dask/helm-chart, dask/values.yaml).
CHART_KEYS = {
    "scheduler": {"image", "serviceAccountName", "securityContext", "resources", "env", "extraArgs", "servicePort"},
    "worker": {
        "image",
        "replicas",
        "serviceAccountName",
        "securityContext",
        "threads_per_worker",
        "resources",
        "env",
        "extraArgs",
    },
    "jupyter": {"enabled"},
    "image": {"repository", "tag", "pullPolicy", "dask_worker"},
}


def _render_worker(values: dict[str, Any]) -> dict[str, Any]:
    """The worker pod as the chart's dask-worker-deployment.yaml template builds it."""
    worker = values["worker"]
    limits = worker["resources"]["limits"]
    args = [worker["image"]["dask_worker"], "cxr-scheduler:8786"]
    args += ["--nthreads", str(worker.get("threads_per_worker") or limits["cpu"]), "--memory-limit", limits["memory"]]
    args += ["--no-dashboard", "--dashboard-address", "8790", *worker.get("extraArgs", [])]
    container = {
        "name": "cxr-worker",
        "image": f"{worker['image']['repository']}:{worker['image']['tag']}",
        "imagePullPolicy": worker["image"]["pullPolicy"],
        "args": args,
        "ports": [{"containerPort": 8790, "name": "dashboard"}],
        "resources": worker["resources"],
        "env": worker.get("env", []),
    }
    spec = {"containers": [container], "securityContext": worker["securityContext"]}
    spec["serviceAccountName"] = worker["serviceAccountName"]
    return spec


def test_helm_values_use_chart_keys_and_render_valid_worker_pods():
    values = yaml.safe_load((CLUSTER / "helm" / "dask-values.yaml").read_text())
    assert set(values) <= {"scheduler", "worker", "jupyter"}
    for section in ("scheduler", "worker", "jupyter"):
        assert set(values[section]) <= CHART_KEYS[section], section
    for section in ("scheduler", "worker"):
        assert set(values[section]["image"]) <= CHART_KEYS["image"]
    spec = _render_worker(values)
    _validate_core(_pod(spec))
    args = spec["containers"][0]["args"]
    # The chart calls the old `dask-worker` name; the image provides it as a shim.
    assert args[0] == "dask-worker" and "/usr/local/bin/dask-worker" in "\n".join(_dockerfile())
    context = dask_worker_cli.make_context("dask-worker", args[1:])
    assert parse_bytes(context.params["memory_limit"]) <= _quantity(values["worker"]["resources"]["limits"]["memory"])
    _validate_core(_pod({"containers": [{"name": "s", "image": "x", "resources": values["scheduler"]["resources"]}]}))
