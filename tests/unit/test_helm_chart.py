"""The Helm chart and the Dockerfile, as Helm and Docker read them.

Every manifest here comes from Helm's own engine (tools/helm_check.py in .venv-helm, the same render
`make helm-check` validates against the Kubernetes schemas), so a chart regression fails these tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.settings import iter_setting_names, load_settings

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "helm" / "appliance" / "ci"
TOOL = ROOT / "tools" / "helm_check.py"
HELM_PY = ROOT / ".venv-helm" / "bin" / "python"
# Settings the chart sets for scale mode that the appliance does not read yet (issue 18: PostgreSQL
# and Redis). Everything else the chart sets must be a setting the appliance has.
PENDING_SETTINGS = {"APPLIANCE_DATABASE__URL", "APPLIANCE_REDIS__URL"}

Objects = list[dict[str, Any]]


CI_FILES = {name: f"helm/appliance/ci/{name}-values.yaml" for name in ("default", "scale", "gpu")}
DIGEST = "sha256:" + "a" * 64
# Every render these tests look at, done in one batch (the Helm library loads once).
JOBS: dict[str, dict[str, Any]] = {
    **{name: {"files": [path]} for name, path in CI_FILES.items()},
    "scale-fixed": {"files": [CI_FILES["scale"]], "set": {"api": {"autoscaling": {"enabled": False}}}},
    "scale-qdrant": {
        "files": [CI_FILES["scale"]],
        "set": {"qdrant": {"enabled": True, "apiKey": True}, "vectorstore": {"url": ""}},
    },
    "gpu-mirror": {"files": [CI_FILES["gpu"]], "set": {"global": {"imageRegistry": "mirror.local:5000"}}},
    "pinned": {"set": {"image": {"registry": "other.local", "digest": DIGEST}}},
}
REFUSED = {
    "no-postgres": ({"mode": "scale"}, "mode=scale needs PostgreSQL"),
    "no-redis": ({"mode": "scale", "database": {"url": "postgresql://h/db"}}, "mode=scale needs Redis"),
    "no-qdrant": (
        {"mode": "scale", "database": {"url": "postgresql://h/db"}, "redis": {"url": "redis://r"}},
        "needs a Qdrant server",
    ),
    "qdrant-embedded": ({"qdrant": {"enabled": True}}, "qdrant.enabled needs mode=scale"),
    "typo": ({"api": {"replica": 3}}, "'replica' not allowed"),
    "no-claim": ({"inference": {"models": [{"name": "m", "path": "m"}]}}, "inference.modelsClaim"),
    # Kubernetes' own schema: a field a Probe does not have.
    "bad-probe": (
        {"api": {"readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "bogus": 1}}}},
        "'bogus' was unexpected",
    ),
}


@pytest.fixture(scope="module")
def helm_venv() -> Path:
    """The chart tools' venv, built by the Makefile target `make helm-check` uses."""
    built = subprocess.run(
        ["make", "-s", ".venv-helm/.installed"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, f"building .venv-helm failed:\n{built.stdout}{built.stderr}"
    return HELM_PY


def _run(helm_venv: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_venv), str(TOOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=600, input=stdin
    )


@pytest.fixture(scope="module")
def rendered(helm_venv: Path) -> dict[str, dict[str, Any]]:
    jobs = {**JOBS, **{key: {"set": values} for key, (values, _) in REFUSED.items()}}
    done = _run(helm_venv, "render-batch", stdin=json.dumps(jobs))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cases(rendered: dict[str, dict[str, Any]]) -> dict[str, Objects]:
    return {key: rendered[key]["objects"] for key in JOBS}


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def named(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} rendered {len(found)} times"
    return found[0]


def workloads(objects: Objects) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] in ("Deployment", "StatefulSet"))


def containers(objects: Objects) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield w, c


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def config(objects: Objects) -> dict[str, str]:
    return named(objects, "ConfigMap", "kb-appliance")["data"]


def test_embedded_default_is_one_pod_with_its_data_volume(cases: dict[str, Objects]) -> None:
    objects = cases["default"]
    (sts,) = of_kind(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    (api,) = sts["spec"]["template"]["spec"]["containers"]
    assert {"name": "data", "mountPath": "/data"} in api["volumeMounts"]
    assert [*api["command"], *api["args"]] == ["appliance", "serve"]
    # The embedded box keeps its in-process engines: no server URLs, no workers, no HPA.
    assert "APPLIANCE_VECTORSTORE__BACKEND" not in config(objects)
    assert not of_kind(objects, "Deployment") and not of_kind(objects, "HorizontalPodAutoscaler")
    assert config(objects)["APPLIANCE_SERVER__HOST"] == "0.0.0.0"


def test_every_pod_runs_as_non_root_without_privileges(cases: dict[str, Objects]) -> None:
    checked = 0
    for objects in cases.values():
        for workload, container in containers(objects):
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["automountServiceAccountToken"] is False
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert not ctx.get("privileged", False)
            if container["name"] in ("api", "worker"):
                assert ctx["readOnlyRootFilesystem"] is True
            checked += 1
    assert checked >= 7  # embedded api; scale api + worker; gpu api + worker + 3 vLLM


def test_api_probes_ask_healthz_and_readyz(cases: dict[str, Objects]) -> None:
    for objects in cases.values():
        apis = [c for _, c in containers(objects) if c["name"] == "api"]
        assert len(apis) == 1
        (api,) = apis
        assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert api["ports"][0]["containerPort"] == 8000


def test_scale_mode_runs_replicas_workers_and_their_budgets(cases: dict[str, Objects]) -> None:
    objects = cases["scale"]
    assert not of_kind(objects, "StatefulSet")
    api = named(objects, "Deployment", "kb-appliance-api")
    assert "replicas" not in api["spec"]  # the HPA owns the count
    hpa = named(objects, "HorizontalPodAutoscaler", "kb-appliance-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "kb-appliance-api"
    worker = named(objects, "Deployment", "kb-appliance-worker")
    assert worker["spec"]["replicas"] == 4
    (wc,) = worker["spec"]["template"]["spec"]["containers"]
    assert [*wc["command"], *wc["args"]] == ["appliance", "worker"]
    budgets = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "PodDisruptionBudget")}
    assert budgets["kb-appliance-api"]["maxUnavailable"] == 1
    assert budgets["kb-appliance-worker"]["maxUnavailable"] == 1

    fixed = cases["scale-fixed"]
    assert named(fixed, "Deployment", "kb-appliance-api")["spec"]["replicas"] == 3
    assert not of_kind(fixed, "HorizontalPodAutoscaler")


def test_scale_mode_settings_point_at_the_shared_engines(cases: dict[str, Objects]) -> None:
    objects = cases["scale"]
    data = config(objects)
    assert data["APPLIANCE_VECTORSTORE__BACKEND"] == "qdrant"
    assert data["APPLIANCE_VECTORSTORE__URL"] == "http://qdrant.vectors.svc:6333"
    assert (data["APPLIANCE_VECTORSTORE__SHARDS"], data["APPLIANCE_VECTORSTORE__REPLICAS"]) == ("6", "2")
    for name in ("kb-appliance-api", "kb-appliance-worker"):
        (c,) = named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = env_of(c)
        db = env["APPLIANCE_DATABASE__URL"]["valueFrom"]["secretKeyRef"]
        assert db == {"name": "kb-appliance", "key": "database-url"}
        assert env["APPLIANCE_REDIS__URL"]["valueFrom"]["secretKeyRef"] == {"name": "kb-redis", "key": "url"}
        assert env["APPLIANCE_VECTORSTORE__API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kb-qdrant"
    # URLs with passwords live in the Secret, never in the ConfigMap.
    assert "database-url" in named(objects, "Secret", "kb-appliance")["data"]
    assert not any("secret@" in v for v in data.values())
    # Behind the TLS Ingress the login cookie is Secure and the public host is a trusted UI origin.
    assert data["APPLIANCE_AUTH__SECURE_COOKIES"] == "true"
    assert json.loads(data["APPLIANCE_AUTH__TRUSTED_ORIGINS"]) == ["https://kb.example.com"]
    backend = named(objects, "Ingress", "kb-appliance")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"] == {"name": "kb-appliance", "port": {"name": "http"}}
    # Prometheus scrapes the API pods' /metrics with the admin key (metrics are not public).
    (endpoint,) = named(objects, "ServiceMonitor", "kb-appliance")["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "kb-appliance", "key": "admin-key"}
    # The appliance's own egress guard lets it reach the hosts of the URLs it was given.
    allow = json.loads(data["APPLIANCE_EGRESS__ALLOW"])
    assert {"qdrant.vectors.svc", "pg.databases.svc", "redis.cache.svc"} <= set(allow)


def test_qdrant_subchart_replaces_the_external_url(cases: dict[str, Objects]) -> None:
    objects = cases["scale-qdrant"]
    assert config(objects)["APPLIANCE_VECTORSTORE__URL"] == "http://kb-qdrant:6333"
    (api,) = named(objects, "Deployment", "kb-appliance-api")["spec"]["template"]["spec"]["containers"]
    ref = env_of(api)["APPLIANCE_VECTORSTORE__API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "kb-qdrant-apikey", "key": "api-key"}


def _pod_labels(objects: Objects) -> list[dict[str, str]]:
    return [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)]


def test_network_policy_denies_egress_beyond_the_releases_own_pods(cases: dict[str, Objects]) -> None:
    for name in CI_FILES:
        objects = cases[name]
        policy = named(objects, "NetworkPolicy", "kb-appliance-egress")["spec"]
        assert "Egress" in policy["policyTypes"]
        selector = policy["podSelector"]["matchLabels"]
        assert all(selector.items() <= labels.items() for labels in _pod_labels(objects)), name
        extra = yaml.safe_load((ROOT / CI_FILES[name]).read_text()) or {}
        allowed_extra = (extra.get("networkPolicy") or {}).get("extraEgress", [])
        for rule in policy["egress"]:
            assert rule.get("to"), f"{name}: an egress rule without `to` allows every destination"
            if rule in allowed_extra:
                continue
            for peer in rule["to"]:
                if "namespaceSelector" in peer:  # the cluster DNS, on port 53 only
                    assert {p["port"] for p in rule["ports"]} == {53}
                    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                else:
                    assert peer == {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "kb"}}}


def test_gpu_values_run_one_vllm_deployment_per_model(cases: dict[str, Objects]) -> None:
    objects = cases["gpu"]
    spec = yaml.safe_load((CI / "gpu-values.yaml").read_text())["inference"]
    resource = {"nvidia": "nvidia.com/gpu", "ascend": "huawei.com/Ascend910"}
    selector = {"nvidia": ("nvidia.com/gpu.present", "true"), "ascend": ("accelerator", "huawei-Ascend910")}
    inference = [o for o in of_kind(objects, "Deployment") if "-llm-" in o["metadata"]["name"]]
    assert len(inference) == len(spec["models"]) == 3
    for model in spec["models"]:
        svc_name = "kb-appliance-llm-" + model["name"].replace(".", "-")
        dep = named(objects, "Deployment", svc_name)
        assert dep["spec"]["replicas"] == model["replicas"]
        pod = dep["spec"]["template"]["spec"]
        (vllm,) = pod["containers"]
        acc = model["accelerator"]
        assert vllm["resources"]["limits"][resource[acc]] == model["devices"]
        assert vllm["image"].startswith(
            {"nvidia": "vllm/vllm-openai:", "ascend": "quay.io/ascend/vllm-ascend:"}[acc]
        )
        key, value = selector[acc]
        assert pod["nodeSelector"][key] == value
        assert any(t["key"] == resource[acc] for t in pod["tolerations"])
        assert vllm["args"][0] == f"/models/{model['path']}"
        assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == str(model["devices"])
        # Model files from the claim, read-only; nothing from a hub.
        (models,) = [v for v in pod["volumes"] if v["name"] == "models"]
        claim = models["persistentVolumeClaim"]
        assert claim == {"claimName": model.get("claimName", spec["modelsClaim"]), "readOnly": True}
        assert env_of(vllm)["HF_HUB_OFFLINE"]["value"] == "1"
        assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
        svc = named(objects, "Service", svc_name)
        assert svc["spec"]["selector"]["kb-appliance/model"] == model["name"]
    ascend = named(objects, "Deployment", "kb-appliance-llm-deepseek-r1-distill-qwen-32b")
    mounts = {m["mountPath"] for m in ascend["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/usr/local/Ascend/driver/lib64" in mounts

    data = config(objects)
    assert data["APPLIANCE_INFERENCE__BACKEND"] == "remote"
    assert data["APPLIANCE_INFERENCE__URL"] == "http://kb-appliance-llm-qwen2-5-7b-instruct:8000/v1"
    extra = {m["name"]: m for m in json.loads(data["APPLIANCE_INFERENCE__MODELS"])}
    assert set(extra) == {"qwen2.5-72b-instruct-awq", "deepseek-r1-distill-qwen-32b"}
    assert all(m["backend"] == "remote" for m in extra.values())
    # Only the appliance's pods may call the vLLM servers.
    ingress = named(objects, "NetworkPolicy", "kb-appliance-inference-ingress")["spec"]
    assert ingress["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "inference"
    (rule,) = ingress["ingress"]
    exprs = {e["key"]: e["values"] for e in rule["from"][0]["podSelector"]["matchExpressions"]}
    assert exprs["app.kubernetes.io/component"] == ["api", "worker"]


def test_every_image_comes_from_the_configured_registry(cases: dict[str, Objects]) -> None:
    objects = cases["gpu-mirror"]
    images = [c["image"] for _, c in containers(objects)]
    assert len(images) == 5
    assert all(image.startswith("mirror.local:5000/") for image in images), images
    pinned = cases["pinned"]
    assert [c["image"] for _, c in containers(pinned)] == [f"other.local/kb-appliance@{DIGEST}"]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_render_refuses_values_that_cannot_work(rendered: dict[str, dict[str, Any]], case: str) -> None:
    assert "objects" not in rendered[case]
    assert REFUSED[case][1] in rendered[case]["error"]


def test_the_chart_sets_only_settings_the_appliance_reads(
    cases: dict[str, Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {name for name, _ in iter_setting_names()}
    for name in CI_FILES:
        objects = cases[name]
        data = config(objects)
        env_names = set(data)
        for _, c in containers(objects):
            if c["name"] in ("api", "worker"):
                env_names |= set(env_of(c))
        assert env_names - known - PENDING_SETTINGS == set(), name
        # The values parse as the appliance's typed settings (JSON lists included).
        with monkeypatch.context() as env:
            for key in [k for k in os.environ if k.startswith("APPLIANCE_")]:
                env.delenv(key)
            for key, value in data.items():
                env.setenv(key, value)
            settings = load_settings()
        assert settings.server.host == "0.0.0.0"
        assert settings.egress.allow == json.loads(data["APPLIANCE_EGRESS__ALLOW"])


def test_dockerfile_builds_with_the_makefile_targets_as_a_non_root_image(helm_venv: Path) -> None:
    done = _run(helm_venv, "dockerfile")
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert parsed["hadolint"]["returncode"] == 0, parsed["hadolint"]["output"]
    stages = parsed["stages"]
    assert len(stages) >= 2  # a build stage with compilers, a runtime stage without
    final = stages[-1]["instructions"]
    users = [i["value"][0] for i in final if i["cmd"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = {}
    for i in final:
        if i["cmd"] == "ENV":
            env.update(zip(i["value"][::2], i["value"][1::2], strict=True))
    assert env["APPLIANCE_SERVER__HOST"] == "0.0.0.0"
    build_args = [i["value"][0] for s in stages for i in s["instructions"] if i["cmd"] == "ARG"]
    assert "LLAMA_CPU=avx2" in build_args
    runs = " ".join(i["value"][0] for s in stages for i in s["instructions"] if i["cmd"] == "RUN")
    targets = ["system-deps-build", "install", "system-deps-runtime"]
    for target in targets:
        assert f"make {target}" in runs or f" {target} " in runs, target
    # The targets the image runs exist and are the ones `make` uses (a dry run resolves them).
    dry = subprocess.run(
        ["make", "-n", "-B", *targets, "LLAMA_CPU=avx2"], cwd=ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "requirements-nodeps.txt" in dry.stdout  # the model packages come with `make install`
    # Outside the container the server still binds loopback only.
    defaults = yaml.safe_load((ROOT / "appliance" / "defaults.yaml").read_text())
    assert defaults["server"]["host"] == "127.0.0.1"


# Kubernetes objects passed through verbatim: their fields are Kubernetes', documented there.
PASS_THROUGH = {
    "podSecurityContext", "securityContext", "resources", "readinessProbe", "livenessProbe",
    "startupProbe", "nodeSelector", "tolerations", "hosts", "namespaceSelector", "podSelector",
}  # fmt: skip


def test_every_value_is_documented_and_typed() -> None:
    """Every key of values.yaml has a comment line above it (bar the fields of Kubernetes objects
    passed through), and values.schema.json types every top-level value."""
    lines = (ROOT / "helm" / "appliance" / "values.yaml").read_text().splitlines()
    key_re = re.compile(r"^(\s*)([A-Za-z][\w.-]*):")
    parents: list[tuple[int, str]] = []
    undocumented, top = [], []
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        parents = [(n, k) for n, k in parents if n < indent]
        if not any(k in PASS_THROUGH for _, k in parents):
            above = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
            if not above.startswith("#"):
                undocumented.append(".".join([*(k for _, k in parents), key]))
        if indent == 0:
            top.append(key)
        parents.append((indent, key))
    assert undocumented == []
    schema = json.loads((ROOT / "helm" / "appliance" / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(top) == set(schema["properties"])


def test_the_docker_build_context_holds_what_make_install_needs(helm_venv: Path, tmp_path: Path) -> None:
    """`make install` in the image's build stage installs the project from the build context: build
    the project's wheel from exactly the files `docker build` would send."""
    done = _run(helm_venv, "context")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    for needed in ("Makefile", "pyproject.toml", "README.md", "constraints.txt", "requirements-nodeps.txt"):
        assert needed in files
    assert not [f for f in files if f.startswith(("tests/", ".venv", ".git", "helm/", ".appliance/"))]
    context = tmp_path / "context"
    for name in files:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_bytes((ROOT / name).read_bytes())
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("kb_appliance-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "appliance/defaults.yaml" in names
    assert {"appliance/cli.py", "ui/app.py"} <= names
    assert any(n.startswith("connectors/") for n in names)
