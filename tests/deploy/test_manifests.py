"""deploy/: the KubeRay manifests, the image recipe and the cluster launcher config give the tree what it relies on.

Kubernetes' own objects (Secret, ConfigMap, Service, StatefulSet) are validated against the
Kubernetes OpenAPI schemas that kubernetes-validate ships (offline, strict: an unknown field
fails), and so are the pod templates inside the KubeRay resources, as PodTemplates. No package on
PyPI ships the KubeRay CRDs: their own fields are checked by name against KubeRay v1.6.0's (the
oldest release these manifests work with: ``authOptions.secretName``), and against the CRDs'
``openAPIV3Schema`` when ``$TRADETREE_KUBERAY_CRDS`` names a folder holding ``ray.io_rayclusters.yaml``
and ``ray.io_rayjobs.yaml`` (a KubeRay checkout's ``ray-operator/config/crd/bases``).

What the tree relies on is asserted from the manifests as KubeRay turns them into pods: each Ray
container has the engine config, the Redis password file and the venue keys from Secrets, with
no literal secret anywhere; the GCS is fault tolerant on that Redis; token authentication is on;
the root's resource is on two or more pods; the RayJob runs ``tradetree up`` and leaves the
cluster running. The engine config in the ConfigMap is loaded with ``load_engine_config``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import tradetree
from tradetree.config import load_engine_config
from tradetree.core import RedisConfig

REPO = Path(tradetree.__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))

ENGINE_CONFIG_PATH = "/etc/tradetree/engine.yaml"
REDIS_PASSWORD_FILE = "/etc/tradetree/redis/password"
PLACEHOLDER = "REPLACE_ME"
# Ray's token authentication exists from this release on.
RAY_TOKEN_AUTH_SINCE = Version("2.52.0")

# The Secret each engine variable comes from, on every Ray container.
SECRET_ENV = {
    "REDIS_PASSWORD": ("tradetree-redis", "password"),
    "OKX_API_KEY": ("tradetree-okx", "api_key"),
    "OKX_SECRET_KEY": ("tradetree-okx", "secret_key"),
    "OKX_PASSPHRASE": ("tradetree-okx", "passphrase"),
    "TRADETREE_SLACK_WEBHOOK_URL": ("tradetree-slack", "webhook_url"),
}
OPTIONAL_SECRET_ENV = {"TRADETREE_SLACK_WEBHOOK_URL"}
SECRETISH = re.compile(r"PASSWORD|PASSPHRASE|SECRET|TOKEN|API_KEY|WEBHOOK|CREDENTIAL", re.IGNORECASE)

# Field names of KubeRay v1.6.0's CRDs (ray-operator/config/crd/bases), to catch a typo or a field
# the oldest supported operator would reject.
KUBERAY_FIELDS = {
    "RayClusterSpec": {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                       "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend",
                       "upgradeStrategy", "workerGroupSpecs"},
    "HeadGroupSpec": {"enableIngress", "headService", "labels", "rayStartParams", "resources", "serviceType",
                      "template"},
    "WorkerGroupSpec": {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts",
                        "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template"},
    "AuthOptions": {"enableK8sTokenAuth", "mode", "secretName"},
    "GcsFaultToleranceOptions": {"externalStorageNamespace", "redisAddress", "redisPassword", "redisUsername"},
    "RedisCredential": {"value", "valueFrom"},
    "RayJobSpec": {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
                   "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy", "metadata",
                   "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes",
                   "submissionMode", "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"},
}


# --- loading -----------------------------------------------------------------------------------


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL_DOCS = [(path.name, doc) for path in MANIFESTS for doc in _docs(path)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in ALL_DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/kuberay/, found {len(found)}"
    return found[0]


def _cluster() -> dict[str, Any]:
    return _one("RayCluster")


def _groups(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head", headGroupSpec), then ("worker", spec) for each worker group."""
    yield "head", cluster["spec"]["headGroupSpec"]
    for group in cluster["spec"].get("workerGroupSpecs") or []:
        yield "worker", group


def _pod_count(node_type: str, group: dict[str, Any]) -> int:
    """Pods of a group that are always there: the head, or a worker group's minimum."""
    if node_type == "head":
        return 1
    return min(group.get("replicas", 1), group.get("minReplicas", group.get("replicas", 1))) * group.get("numOfHosts", 1)


def _ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first


def _engine_configmap() -> dict[str, Any]:
    return _one("ConfigMap", "tradetree-engine")


def _engine_yaml() -> dict[str, Any]:
    return yaml.safe_load(_engine_configmap()["data"]["engine.yaml"])


def _secret_ref(env_var: dict[str, Any]) -> tuple[str, str] | None:
    ref = (env_var.get("valueFrom") or {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def _kuberay_env(cluster: dict[str, Any], node_type: str) -> dict[str, dict[str, Any]]:
    """What KubeRay adds to a Ray container's env from the RayCluster spec (v1.6 common/pod.go)."""
    spec = cluster["spec"]
    added: dict[str, dict[str, Any]] = {}
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        secret = auth.get("secretName") or f"{cluster['metadata']['name']}-auth-secret"
        added["RAY_AUTH_MODE"] = {"name": "RAY_AUTH_MODE", "value": "token"}
        added["RAY_AUTH_TOKEN"] = {"name": "RAY_AUTH_TOKEN",
                                   "valueFrom": {"secretKeyRef": {"name": secret, "key": "auth_token"}}}
    ft = spec.get("gcsFaultToleranceOptions")
    if node_type == "head" and ft and ft.get("redisPassword"):
        added["REDIS_PASSWORD"] = {"name": "REDIS_PASSWORD", **ft["redisPassword"]}
    return added


def _effective_env(cluster: dict[str, Any], node_type: str, container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = {e["name"]: e for e in container.get("env") or []}
    for name, var in _kuberay_env(cluster, node_type).items():
        env.setdefault(name, var)  # KubeRay adds only what the container does not set
    return env


def _files(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Path in the container -> (configMap|secret, object name, key), for every key mounted as a file."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    out: dict[str, tuple[str, str, str]] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:  # a StatefulSet's volume claim: no file of a ConfigMap or Secret
            continue
        base = PurePosixPath(mount["mountPath"])
        if "subPath" in mount:  # one file of the volume, at mountPath itself
            for kind, name, key, rel in _volume_files(volume):
                if rel == mount["subPath"]:
                    out[str(base)] = (kind, name, key)
            continue
        for kind, name, key, rel in _volume_files(volume):
            out[str(base / rel)] = (kind, name, key)
    return out


def _volume_files(volume: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(kind, name, key, relative path) of each key a configMap, secret or projected volume shows.
    A source without items shows every key of the object, so its keys are read from the manifests."""
    sources: list[tuple[str, dict[str, Any]]] = []
    if "configMap" in volume:
        sources.append(("configMap", volume["configMap"]))
    if "secret" in volume:
        sources.append(("secret", {**volume["secret"], "name": volume["secret"]["secretName"]}))
    for source in (volume.get("projected") or {}).get("sources") or []:
        for kind in ("configMap", "secret"):
            if kind in source:
                sources.append((kind, source[kind]))
    for kind, source in sources:
        items = source.get("items")
        if items:
            for item in items:
                yield kind, source["name"], item["key"], item["path"]
        else:
            obj = _one("ConfigMap" if kind == "configMap" else "Secret", source["name"])
            for key in (obj.get("data") or {}) | (obj.get("stringData") or {}):
                yield kind, source["name"], key, key


def _containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) for every container a manifest defines."""
    templates: list[tuple[str, dict[str, Any]]] = []
    if doc["kind"] in ("Deployment", "StatefulSet"):
        templates.append((doc["metadata"]["name"], doc["spec"]["template"]))
    elif doc["kind"] == "RayCluster":
        templates += [(f"{t}:{g.get('groupName', t)}", g["template"]) for t, g in _groups(doc)]
    elif doc["kind"] == "RayJob" and doc["spec"].get("submitterPodTemplate"):
        templates.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    for where, template in templates:
        spec = template["spec"]
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            yield f"{doc['kind']} {where} {c['name']}", c


def _ray_resources(group: dict[str, Any]) -> dict[str, float]:
    """A group's custom Ray resources: its `resources` field (KubeRay >= 1.5) or `--resources`."""
    out = {k: float(v) for k, v in (group.get("resources") or {}).items()}
    raw = (group.get("rayStartParams") or {}).get("resources")
    if raw:
        out |= json.loads(raw.strip("'\""))  # KubeRay passes it through a shell: '"{...}"' or '{...}'
    return out


# --- Kubernetes and KubeRay schemas ------------------------------------------------------------


def _kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import latest_version

    # The oldest Kubernetes KubeRay 1.6 is tested on, and the newest the validator knows.
    return ["1.30", latest_version()]


@pytest.mark.parametrize("k8s_version", _kubernetes_versions())
def test_core_objects_and_ray_pod_templates_match_the_kubernetes_schema(k8s_version):
    import kubernetes_validate

    checked = []
    for source, doc in ALL_DOCS:
        if doc["apiVersion"].startswith("ray.io/"):
            if doc["kind"] == "RayCluster":
                templates = [g["template"] for _, g in _groups(doc)]
            else:
                templates = [doc["spec"]["submitterPodTemplate"]] if doc["spec"].get("submitterPodTemplate") else []
            for i, template in enumerate(templates):
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{doc['kind']}-{i}"},
                           "template": template}
                kubernetes_validate.validate(wrapped, k8s_version, strict=True)
                checked.append(f"{source}: {doc['kind']} pod template {i}")
            continue
        kubernetes_validate.validate(doc, k8s_version, strict=True)
        checked.append(f"{source}: {doc['kind']} {doc['metadata']['name']}")
    kinds = {d["kind"] for _, d in ALL_DOCS}
    assert {"Secret", "ConfigMap", "Service", "StatefulSet", "RayCluster", "RayJob"} <= kinds, kinds
    assert len(checked) >= 8, checked


def test_kuberay_resources_use_only_fields_kuberay_knows():
    cluster, job = _cluster(), _one("RayJob")
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"

    def known(obj: dict[str, Any], kind: str, where: str) -> None:
        unknown = set(obj) - KUBERAY_FIELDS[kind]
        assert not unknown, f"{where}: fields KubeRay v1.6 does not know: {sorted(unknown)}"

    spec = cluster["spec"]
    known(spec, "RayClusterSpec", "RayCluster.spec")
    known(spec["headGroupSpec"], "HeadGroupSpec", "headGroupSpec")
    for group in spec["workerGroupSpecs"]:
        known(group, "WorkerGroupSpec", f"workerGroupSpecs[{group['groupName']}]")
    known(spec["authOptions"], "AuthOptions", "authOptions")
    known(spec["gcsFaultToleranceOptions"], "GcsFaultToleranceOptions", "gcsFaultToleranceOptions")
    known(spec["gcsFaultToleranceOptions"]["redisPassword"], "RedisCredential", "redisPassword")
    known(job["spec"], "RayJobSpec", "RayJob.spec")


def _strict(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        if schema.get("x-kubernetes-int-or-string"):
            schema.pop("type", None)
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for key, value in schema.items():
            if key == "properties":
                for sub in value.values():
                    _strict(sub)
            elif isinstance(value, dict | list):
                _strict(value)
    elif isinstance(schema, list):
        for item in schema:
            _strict(item)
    return schema


@pytest.mark.parametrize("kind, crd_file", [("RayCluster", "ray.io_rayclusters.yaml"), ("RayJob", "ray.io_rayjobs.yaml")])
def test_kuberay_resources_match_the_crd_schema(kind, crd_file):
    folder = os.environ.get("TRADETREE_KUBERAY_CRDS")
    if not folder:
        pytest.skip("no KubeRay CRDs here (no package ships them): set TRADETREE_KUBERAY_CRDS to a KubeRay "
                    "checkout's ray-operator/config/crd/bases to validate against them")
    import jsonschema

    crd = yaml.safe_load((Path(folder) / crd_file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(_one(kind))]
    assert not errors, errors


# --- what the tree relies on -------------------------------------------------------------------


def test_gcs_is_fault_tolerant_on_the_tradetree_redis():
    ft = _cluster()["spec"]["gcsFaultToleranceOptions"]
    service = _one("Service", "tradetree-redis")
    ports = {p["port"] for p in service["spec"]["ports"]}
    host, port = ft["redisAddress"].rsplit(":", 1)
    assert host == "tradetree-redis" and int(port) in ports, ft["redisAddress"]
    assert "value" not in ft["redisPassword"], "the GCS's Redis password must come from the Secret, not the manifest"
    assert _secret_ref(ft["redisPassword"]) == ("tradetree-redis", "password")
    # The Redis behind it: the Service selects the StatefulSet's pods, and the password is that Secret's.
    sts = _one("StatefulSet", "tradetree-redis")
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (redis,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in redis["env"]}
    assert _secret_ref(env["REDIS_PASSWORD"]) == ("tradetree-redis", "password")


def test_redis_keeps_an_append_only_file_on_a_volume():
    sts = _one("StatefulSet", "tradetree-redis")
    (redis,) = sts["spec"]["template"]["spec"]["containers"]
    files = _files(sts["spec"]["template"]["spec"], redis)
    (conf_path,) = [p for p, (kind, _, key) in files.items() if kind == "configMap" and key == "redis.conf"]
    assert conf_path in " ".join(redis.get("command", []) + redis.get("args", []))
    kind, name, key = files[conf_path]
    conf = dict(line.split(None, 1) for line in _one("ConfigMap", name)["data"][key].splitlines()
                if line.strip() and not line.lstrip().startswith("#"))
    assert conf["appendonly"] == "yes" and conf["maxmemory-policy"].split()[0] == "noeviction"
    data_mounts = {m["mountPath"] for m in redis["volumeMounts"] if m["name"] in
                   {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}}
    assert conf["dir"] in data_mounts, "the AOF must be written to the volume claim, not the container's layer"


def test_token_authentication_is_on_with_the_tradetree_token_secret():
    cluster = _cluster()
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"] == "tradetree-ray-token"
    assert "auth_token" in _one("Secret", "tradetree-ray-token")["stringData"]  # the key KubeRay reads
    # KubeRay turns authOptions on only for a rayVersion with token authentication.
    assert Version(cluster["spec"]["rayVersion"]) >= RAY_TOKEN_AUTH_SINCE
    for node_type, group in _groups(cluster):
        env = _effective_env(cluster, node_type, _ray_container(group))
        assert env["RAY_AUTH_MODE"].get("value") == "token", node_type
        assert _secret_ref(env["RAY_AUTH_TOKEN"]) == ("tradetree-ray-token", "auth_token"), node_type


def test_the_root_resource_is_on_two_or_more_pods_and_the_engine_asks_for_it():
    cluster = _cluster()
    root_resources = _engine_yaml()["supervision"]["root_resources"]
    assert root_resources == {"tradetree_root": 1}
    for resource, amount in root_resources.items():
        pods = sum(_pod_count(t, g) for t, g in _groups(cluster) if _ray_resources(g).get(resource, 0) >= amount)
        assert pods >= 2, f"{resource} on {pods} pod(s): Ray could not re-create the root elsewhere"


def test_every_ray_node_runs_workers_at_niceness_0_and_the_head_has_the_system_config():
    cluster = _cluster()
    for node_type, group in _groups(cluster):
        env = _effective_env(cluster, node_type, _ray_container(group))
        assert env["RAY_worker_niceness"].get("value") == "0", node_type
    raw = cluster["spec"]["headGroupSpec"]["rayStartParams"]["system-config"]
    # KubeRay runs `ray start --system-config=<value>` in a shell: the JSON must be one quoted word.
    (word,) = shlex.split(raw)
    assert json.loads(word) == {"health_check_period_ms": 500, "worker_niceness": 0}


def test_every_ray_container_gets_the_engine_config_and_secrets_from_kubernetes():
    cluster = _cluster()
    images = set()
    for node_type, group in _groups(cluster):
        container = _ray_container(group)
        images.add(container["image"])
        files = _files(group["template"]["spec"], container)
        assert files.get(ENGINE_CONFIG_PATH) == ("configMap", "tradetree-engine", "engine.yaml"), node_type
        assert files.get(REDIS_PASSWORD_FILE) == ("secret", "tradetree-redis", "password"), node_type
        # Every strategy file the engine config names sits beside it.
        for name in _engine_yaml().get("strategy_files") or []:
            assert files.get(str(PurePosixPath(ENGINE_CONFIG_PATH).parent / name)) == \
                ("configMap", "tradetree-engine", name), (node_type, name)
        env = _effective_env(cluster, node_type, container)
        for name, ref in SECRET_ENV.items():
            assert name in env, f"{node_type}: no {name}"
            assert _secret_ref(env[name]) == ref, (node_type, name, env[name])
            optional = env[name]["valueFrom"]["secretKeyRef"].get("optional", False)
            assert optional == (name in OPTIONAL_SECRET_ENV), (node_type, name)
    assert len(images) == 1, f"every Ray pod must run the same image, got {images}"


def test_the_head_leaves_redis_password_to_kuberay():
    # KubeRay sets REDIS_PASSWORD on the head from gcsFaultToleranceOptions.redisPassword and rejects
    # a RayCluster whose head container sets it too (utils/validation.go, KubeRay 1.3 to 1.7).
    head = _ray_container(_cluster()["spec"]["headGroupSpec"])
    assert "REDIS_PASSWORD" not in {e["name"] for e in head.get("env") or []}
    assert "redis-password" not in _cluster()["spec"]["headGroupSpec"]["rayStartParams"]


def test_no_secret_value_is_written_anywhere_but_as_a_placeholder():
    texts = {p.name: p.read_text() for p in [*MANIFESTS, DEPLOY / "ray-cluster.yaml", DEPLOY / "Dockerfile"]}
    for source, doc in ALL_DOCS:
        if doc["kind"] == "Secret":
            assert "data" not in doc, f"{source}: Secret {doc['metadata']['name']} has base64 data, not placeholders"
            values = doc["stringData"].values()
            assert values and all(v == PLACEHOLDER for v in values), (source, doc["metadata"]["name"])
        for where, container in _containers(doc):
            for var in container.get("env") or []:
                if SECRETISH.search(var["name"]):
                    assert "value" not in var, f"{source}: {where}: {var['name']} has a literal value"
    for name, text in texts.items():
        assert not re.search(r"rediss?://[^\s/@]*@", text), f"{name}: a Redis URL with credentials"
        assert "--redis-password" not in text and "RAY_AUTH_TOKEN=" not in text, name
        for line in text.splitlines():
            # The only requirepass is the one the Redis pod builds from its environment.
            if re.search(r"\brequirepass\b", line) and not line.lstrip().startswith("#"):
                assert re.search(r"requirepass\s+\"?\$", line), f"{name}: {line.strip()}"
    dockerfile = texts["Dockerfile"]
    for line in dockerfile.splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not SECRETISH.search(line), f"Dockerfile bakes in a secret: {line.strip()}"
    job = _one("RayJob")["spec"]
    assert "runtimeEnvYAML" not in job, "a runtime_env is shown by the dashboard and inherited by the tree"


def test_the_rayjob_runs_tradetree_up_on_the_cluster_and_leaves_it_running():
    job, cluster = _one("RayJob")["spec"], _cluster()
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["tradetree", "up", "--config"], argv
    assert argv[3] == ENGINE_CONFIG_PATH
    assert "--address" not in argv, "a job's entrypoint has $RAY_ADDRESS; an address here would go stale"
    assert job["shutdownAfterJobFinishes"] is False
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job, "a RayJob's own cluster would be deleted with the job, and the tree with it"
    # KubeRay refuses these with clusterSelector (utils/validation.go).
    assert job.get("backoffLimit", 0) == 0 and job.get("submissionMode", "K8sJobMode") != "SidecarMode"
    # The entrypoint runs on the head: the config must be there.
    head = cluster["spec"]["headGroupSpec"]
    assert ENGINE_CONFIG_PATH in _files(head["template"]["spec"], _ray_container(head))


def _write_configmap(tmp_path: Path) -> Path:
    for key, text in _engine_configmap()["data"].items():
        (tmp_path / key).write_text(text)
    return tmp_path / "engine.yaml"


PASSWORD_FIELDS = ("password_file", "password_env")


def test_the_engine_config_loads_and_is_fit_for_tradetree_up(tmp_path):
    path = _write_configmap(tmp_path)
    missing = [f for f in PASSWORD_FIELDS if f not in RedisConfig.model_fields]
    if missing:  # the config model gains them in a parallel change; the rest of the file is checked now
        raw = yaml.safe_load(path.read_text())
        raw["redis"] = {k: v for k, v in raw["redis"].items() if k not in missing}
        path.write_text(yaml.safe_dump(raw))
    config = load_engine_config(path)
    url = urlsplit(config.redis.url)
    assert url.password is None and url.username is None, "no password in the Redis URL: it is recorded and shown"
    assert (url.hostname, url.port) == ("tradetree-redis", 6379)
    # `tradetree up` refuses what lives in its own process: the embedded Redis and simulator.
    (venue,) = config.venues
    assert not venue.uses_embedded_simulator
    assert (venue.name, venue.rest_url) == ("okx", "https://www.okx.com")
    # The gateway appends /private and /public itself: the config names the base.
    assert venue.ws_url == "wss://ws.okx.com:8443/ws/v5"
    assert config.supervision.root_resources == {"tradetree_root": 1.0}
    assert config.strategies and all(s.venue == "okx" for s in config.strategies)
    # The variables the engine reads its keys from are the ones the pods set from the Secret.
    names = (venue.api_key_env, venue.secret_key_env, venue.passphrase_env)
    assert all(SECRET_ENV[n][0] == "tradetree-okx" for n in names), names
    creds = venue.resolve_credentials({n: "x" for n in names})
    assert creds.api_key.get_secret_value() == "x"


def test_the_engine_config_reads_the_redis_password_from_the_mounted_file(tmp_path):
    missing = [f for f in PASSWORD_FIELDS if f not in RedisConfig.model_fields]
    if missing:
        pytest.skip(f"RedisConfig has no {', '.join(missing)} yet (added by the change that reads secrets in "
                    "each actor's process); the ConfigMap already uses them")
    config = load_engine_config(_write_configmap(tmp_path))
    assert str(config.redis.password_file) == REDIS_PASSWORD_FILE
    assert config.redis.password_env == "REDIS_PASSWORD"
    assert SECRET_ENV[config.redis.password_env] == ("tradetree-redis", "password")


# --- the image and the cluster launcher ----------------------------------------------------------


def _dockerfile_base() -> tuple[str, Version, str]:
    """(image, Ray version, Python tag) of deploy/Dockerfile's FROM, with its ARG defaults applied."""
    text = (DEPLOY / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    (image,) = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-(py3\d+)", image)
    assert match, f"the base must be an official rayproject/ray:<version>-py3XX image, got {image}"
    return image, Version(match.group(1)), match.group(2)


def test_the_image_ray_is_the_pinned_ray_and_the_clusters():
    _, ray_version, py_tag = _dockerfile_base()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (ray_req,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ray"]
    assert ray_req.specifier.contains(ray_version), f"Ray {ray_version} is outside pyproject.toml's {ray_req}"
    assert ray_version >= RAY_TOKEN_AUTH_SINCE, "the manifests rely on Ray's token authentication"
    py = Version(f"{py_tag[2]}.{py_tag[3:]}")
    assert py in Requirement(f"python{project['requires-python']}").specifier, (py_tag, project["requires-python"])
    cluster = _cluster()
    assert Version(cluster["spec"]["rayVersion"]) == ray_version
    for node_type, group in _groups(cluster):
        assert f"ray{ray_version}" in _ray_container(group)["image"], (node_type, "tag the image with its Ray")


def test_the_image_installs_the_repo_as_a_non_root_user_with_ray_held_to_the_base():
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    run = " ".join(re.findall(r"^RUN\s+(.+(?:\\\n.+)*)", text, re.MULTILINE))
    assert "pip install" in run and '"ray[default]==${RAY_VERSION}"' in run, run
    # The sources are what .dockerignore lets through: every folder the package links to.
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "an allowlist: nothing reaches the image unless named"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    folders = {p.name for p in (REPO / "tradetree").iterdir() if p.is_symlink()}
    assert {"pyproject.toml", "README.md", "tradetree", *folders} <= allowed, sorted(folders - allowed)


def test_the_cluster_launcher_config_turns_on_token_auth_and_the_root_resource():
    config = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    commands = {"head": config["head_start_ray_commands"], "worker": config["worker_start_ray_commands"]}
    for node_type, lines in commands.items():
        (start,) = [shlex.split(c) for c in lines if "ray start" in c]
        env = dict(w.split("=", 1) for w in start[:start.index("ray")])
        assert env.get("RAY_AUTH_MODE") == "token" and env.get("RAY_worker_niceness") == "0", (node_type, env)
        flags = dict(w[2:].split("=", 1) for w in start if w.startswith("--") and "=" in w)
        assert json.loads(flags["resources"]).get("tradetree_root") == 1, node_type
        if node_type == "head":
            assert json.loads(flags["system-config"]) == {"health_check_period_ms": 500, "worker_niceness": 0}
    # The token Ray reads by default on each node comes from where `ray get-auth-token --generate` wrote it.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


# --- the Redis pod's start script, run -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.parametrize("password", ["plain", 's p"a\\c e$x\'y'])
def test_the_redis_start_script_requires_the_secrets_password(tmp_path, password):
    import redis

    sts = _one("StatefulSet", "tradetree-redis")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    files = _files(sts["spec"]["template"]["spec"], container)
    (conf_path,) = [p for p, (_, _, key) in files.items() if key == "redis.conf"]
    _, name, key = files[conf_path]
    port = _free_port()
    conf = _one("ConfigMap", name)["data"][key]
    conf = re.sub(r"^bind .*$", "bind 127.0.0.1", conf, flags=re.MULTILINE)
    conf = re.sub(r"^port .*$", f"port {port}", conf, flags=re.MULTILINE)
    conf = re.sub(r"^dir .*$", f"dir {tmp_path}", conf, flags=re.MULTILINE)
    (tmp_path / "redis.conf").write_text(conf)
    script = script.replace(conf_path, str(tmp_path / "redis.conf"))

    refused = subprocess.run(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": PLACEHOLDER},
                             capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0 and PLACEHOLDER in refused.stderr

    proc = subprocess.Popen(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": password},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
                assert client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "redis-server did not come up"
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # no client retries
            raw.sendall(b"PING\r\n")
            assert raw.recv(100).startswith(b"-NOAUTH")
    finally:
        proc.terminate()  # exec'd: SIGTERM reaches redis-server itself
        proc.wait(timeout=10)
    assert proc.returncode == 0, "redis-server did not shut down cleanly on SIGTERM"
