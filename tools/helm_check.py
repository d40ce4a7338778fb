"""Lint, render and validate the Helm chart, and lint the Dockerfile, offline (`make helm-check`).

Runs in the small venv `make` builds from requirements-helm.txt (.venv-helm), not the appliance's:
- Helm's own engine renders and lints the chart: Helm's Go SDK, built into helm-python-sdk's wheel as
  a shared library (no helm binary, no cluster, no network);
- every rendered object is validated against the Kubernetes OpenAPI schemas of the oldest and the
  newest Kubernetes the chart supports (kubernetes-validate, strict: unknown fields fail), and the
  ServiceMonitor against the prometheus-operator CRD's typed model;
- hadolint lints the Dockerfile, which Docker's own parser reads for the tests.

    python tools/helm_check.py check                      # all of it; exit 1 on any failure
    python tools/helm_check.py render [-f VALUES]... [--set-json JSON]   # objects as JSON
    python tools/helm_check.py render-batch < JOBS.json   # many renders in one process
    python tools/helm_check.py dockerfile                 # parsed instructions + hadolint, as JSON
    python tools/helm_check.py context                    # the Docker build context's files

A step that cannot run says so and fails; the one thing reported as not done is the Qdrant subchart's
own objects when its chart is absent (it needs `helm dependency build`, which needs the network).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "appliance"
CASES = sorted((CHART / "ci").glob("*-values.yaml"))
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.29", kubernetes_validate.latest_version())
RELEASE = "kb"
NAMESPACE = "kb"

# What Kubernetes checks on the server side and the schemas do not: names and labels.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# Kinds whose name becomes a DNS label (a host name), not only a subdomain.
DNS_LABEL_KINDS = {"Service"}


class CheckFailed(Exception):
    """A lint error, a render error or an object that does not validate."""


class _StrictLoader(yaml.SafeLoader):
    """Rejects duplicate keys: PyYAML keeps the last one silently, the API server refuses them."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise CheckFailed(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Later values files win, maps merge key by key: what `helm -f a -f b` does."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def load_values(files: list[Path], set_json: list[str] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        values = merge_values(values, yaml.safe_load(path.read_text()) or {})
    for item in set_json or []:
        values = merge_values(values, json.loads(item))
    return values


def subchart_present(name: str = "qdrant") -> bool:
    charts = CHART / "charts"
    return charts.is_dir() and any(p.name.startswith(name) for p in charts.iterdir())


def lint(values: dict[str, Any]) -> list[str]:
    """Helm's linter at the chart's oldest Kubernetes. Returns the notes it made; raises on errors."""
    report = helm.lint(CHART, values, kube_version=f"v{KUBE_VERSIONS[0]}.0")
    notes, failures = [], list(report.get("errors") or [])
    for message in report.get("messages") or []:
        text, severity = message["error"], message["severity"]
        if "missing these dependencies: qdrant" in text:
            notes.append("the qdrant subchart is not in charts/ (`helm dependency build` needs network)")
        elif severity >= 2:  # warnings count as failures: the chart should lint clean
            failures.append(f"{message['path']}: {text}")
        else:
            notes.append(text)
    if failures:
        raise CheckFailed("helm lint: " + "; ".join(failures))
    return notes


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (schema-checked first, as `helm install` does)."""
    with helm.Chart.load(CHART) as chart:
        try:
            chart.validate_schema(values)
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as exc:
            raise CheckFailed(str(exc)) from exc
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.load_all(text, Loader=_StrictLoader))
        except (yaml.YAMLError, CheckFailed) as exc:
            raise CheckFailed(f"{path}: not valid YAML: {exc}") from exc
        objects.extend(doc for doc in docs if doc)
    return objects


def _unknown_keys(given: Any, kept: Any, where: str) -> list[str]:
    """Keys of ``given`` a model dropped on its way through (a field its schema does not have)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{where}.{key}")
            else:
                out.extend(_unknown_keys(value, kept[key], f"{where}.{key}"))
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            k
            for i, (a, b) in enumerate(zip(given, kept, strict=False))
            for k in _unknown_keys(a, b, f"{where}[{i}]")
        ]
    return []


def _validate_service_monitor(obj: dict[str, Any]) -> None:
    import pydantic
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    try:
        model = ServiceMonitor.model_validate(obj)
    except pydantic.ValidationError as exc:
        raise CheckFailed(str(exc)) from exc
    unknown = _unknown_keys(obj, model.model_dump(by_alias=True, exclude_none=True, mode="json"), "")
    if unknown:
        raise CheckFailed(f"fields the ServiceMonitor CRD does not have: {', '.join(unknown)}")


def _check_names(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = DNS_LABEL if obj["kind"] in DNS_LABEL_KINDS else DNS_SUBDOMAIN
    if not pattern.match(name):
        raise CheckFailed(f"metadata.name {name!r} is not a valid {obj['kind']} name")
    labelled = [meta.get("labels") or {}]
    template = (obj.get("spec") or {}).get("template") or {}
    labelled.append((template.get("metadata") or {}).get("labels") or {})
    for labels in labelled:
        for key, value in labels.items():
            if not isinstance(value, str) or not LABEL_VALUE.match(value):
                raise CheckFailed(f"label {key}={value!r} is not a valid label value")


def validate(obj: dict[str, Any]) -> None:
    """Validate one object against the schemas of every Kubernetes version we target."""
    _check_names(obj)
    if obj.get("apiVersion") == "monitoring.coreos.com/v1":
        if obj["kind"] != "ServiceMonitor":
            raise CheckFailed(f"no schema here for {obj['kind']}")
        _validate_service_monitor(obj)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise CheckFailed(f"Kubernetes {version}: {where}: {exc.message}") from exc
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise CheckFailed(f"Kubernetes {version} has no {obj['apiVersion']} {obj['kind']}") from exc


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def check_case(label: str, values: dict[str, Any]) -> int:
    """Lint, render and validate one set of values; prints a line, returns the objects checked."""
    notes = lint(values)
    objects = render(values)
    if not objects:
        raise CheckFailed("rendered nothing")
    for obj in objects:
        try:
            validate(obj)
        except CheckFailed as exc:
            raise CheckFailed(f"{describe(obj)}: {exc}") from exc
    kinds = sorted({o["kind"] for o in objects})
    print(f"  {label}: lint clean, {len(objects)} objects valid ({', '.join(kinds)})")
    for note in notes:
        print(f"    lint note: {note}")
    return len(objects)


def hadolint() -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        raise CheckFailed(f"hadolint is not installed in {binary.parent} (requirements-helm.txt)")
    return subprocess.run(
        [str(binary), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )


def check() -> int:
    print(
        f"helm-check: Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
        f"kubernetes-validate {kubernetes_validate.version.__version__} "
        f"(Kubernetes {' and '.join(KUBE_VERSIONS)})"
    )
    if not CASES:
        print(f"helm-check: FAILED: no *-values.yaml under {CHART / 'ci'}")
        return 1
    failed = 0
    cases: list[tuple[str, dict[str, Any]]] = [(p.name, load_values([p])) for p in CASES]
    scale = load_values([CHART / "ci" / "scale-values.yaml"])
    qdrant_on = merge_values(scale, {"qdrant": {"enabled": True}, "vectorstore": {"url": ""}})
    cases.append(("scale-values.yaml + qdrant.enabled", qdrant_on))
    for label, values in cases:
        try:
            check_case(label, values)
        except (CheckFailed, helm.HelmError) as exc:
            failed += 1
            print(f"  {label}: FAILED: {exc}")
    if not subchart_present():
        print(
            "  NOT RENDERED: the Qdrant subchart's own objects (qdrant.enabled). Its chart is not in "
            "helm/appliance/charts/ and `helm dependency build` needs network; this chart's side of "
            "that case (URL, Secret, NetworkPolicy) was rendered and validated above."
        )
    lint_run = hadolint()
    if lint_run.returncode:
        failed += 1
        print(f"  Dockerfile: FAILED hadolint:\n{lint_run.stdout}{lint_run.stderr}")
    else:
        print("  Dockerfile: hadolint clean")
    print(
        f"helm-check: {'FAILED' if failed else 'OK'} ({len(cases) + 1 - failed} of {len(cases) + 1} checks clean)"
    )
    return 1 if failed else 0


def dockerfile_json() -> dict[str, Any]:
    import dockerfile

    stages: list[dict[str, Any]] = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd.upper() == "FROM":
            stages.append({"from": list(cmd.value), "instructions": []})
        entry = {"cmd": cmd.cmd.upper(), "value": list(cmd.value), "flags": list(cmd.flags)}
        (stages[-1]["instructions"] if stages else []).append(entry)
    run = hadolint()
    return {"stages": stages, "hadolint": {"returncode": run.returncode, "output": run.stdout + run.stderr}}


def render_job(files: list[Path], set_json: list[str], validated: bool = True) -> list[dict[str, Any]]:
    objects = render(load_values(files, set_json))
    if validated:
        for obj in objects:
            try:
                validate(obj)
            except CheckFailed as exc:
                raise CheckFailed(f"{describe(obj)}: {exc}") from exc
    return objects


def render_batch(jobs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Many renders in one process (the Helm library loads once): {id: {"files", "set"}} in,
    {id: {"objects"} or {"error"}} out."""
    out: dict[str, dict[str, Any]] = {}
    for key, job in jobs.items():
        files = [ROOT / f for f in job.get("files", [])]
        overrides = [json.dumps(job["set"])] if job.get("set") else []
        try:
            out[key] = {"objects": render_job(files, overrides)}
        except CheckFailed as exc:
            out[key] = {"error": str(exc)}
    return out


def build_context() -> list[str]:
    """The files `docker build .` sends: the repository less what .dockerignore excludes (the
    Docker SDK applies the patterns as the Docker CLI does)."""
    from docker.utils.build import exclude_paths

    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    paths = exclude_paths(str(ROOT), patterns, dockerfile="Dockerfile")
    return sorted(p for p in paths if (ROOT / p).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="lint, render and validate every ci/*-values.yaml; lint the Dockerfile")
    rend = sub.add_parser("render", help="render with these values; print the objects as JSON")
    rend.add_argument("-f", "--values", type=Path, action="append", default=[])
    rend.add_argument("--set-json", action="append", default=[], help="a JSON object merged last")
    rend.add_argument("--no-validate", action="store_true", help="skip the schema validation")
    sub.add_parser("render-batch", help="render the jobs of a JSON object on stdin (see render_batch)")
    sub.add_parser("dockerfile", help="the Dockerfile's stages and hadolint's verdict as JSON")
    sub.add_parser("context", help="the files of the Docker build context as JSON")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check()
    if args.command == "dockerfile":
        print(json.dumps(dockerfile_json()))
        return 0
    if args.command == "context":
        print(json.dumps(build_context()))
        return 0
    if args.command == "render-batch":
        print(json.dumps(render_batch(json.load(sys.stdin))))
        return 0
    try:
        objects = render_job(args.values, args.set_json, validated=not args.no_validate)
    except CheckFailed as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
