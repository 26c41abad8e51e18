"""Offline checks of cluster/ and jobs/runtime_env.yaml.

Nothing here starts Ray, Docker, a cloud node or a Kubernetes object. Each config is checked with what
its consumer checks it with: Ray's ray-schema.json and `ray up`'s own config preparation for the
launcher YAMLs, the KubeRay v1.7.0 CRD schemas for the manifests, Ray's CLI parser for every
`ray start` line, Ray's RuntimeEnv and exclude matcher for runtime envs. Every checker is also run on a
broken copy and must complain, so a checker that silently accepts everything fails here too.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CRDS = REPO.parent / "shared" / "data" / "kuberay-v1.7.0"
AWS, GCP = CLUSTER / "aws-gpu.yaml", CLUSTER / "gcp-gpu.yaml"
LAUNCHERS = [AWS, GCP]
RAYCLUSTER, RAYJOB = CLUSTER / "kuberay" / "raycluster.yaml", CLUSTER / "kuberay" / "rayjob.yaml"
MANIFESTS = {RAYCLUSTER: "ray.io_rayclusters.yaml", RAYJOB: "ray.io_rayjobs.yaml"}
DOCKERFILE, LOCAL_SH = CLUSTER / "Dockerfile", CLUSTER / "local.sh"
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
SHIPPED = [*LAUNCHERS, *MANIFESTS, DOCKERFILE, LOCAL_SH]
TOKEN_DIR = "/home/ray/raykit-auth"   # where the launcher configs mount the cluster's token directory
IMAGE_WORKDIR = "/home/ray/raykit"    # the Dockerfile's checkout, the RayJob's working_dir
# RayJob submission modes in KubeRay v1.7.0 (rayjob_types.go). The CRD declares submissionMode as a
# plain string, so the schema cannot catch a misspelt one: the API server would accept it.
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def ray_version() -> str:
    import ray  # importing Ray starts nothing

    return ray.__version__


# ---------------------------------------------------------------------------------------------------
# Cluster launcher (ray up)


def launcher_errors(cfg: dict) -> list[str]:
    """What `ray up`'s schema (the one shipped in the installed Ray) rejects in a launcher config."""
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(cfg)]


def ray_start_params(line: str) -> dict:
    """Parse the `ray start ...` part of a shell line with Ray's own CLI parser (which rejects unknown
    or malformed flags) without running it."""
    from ray.scripts.scripts import start

    words = shlex.split(line)
    at = next(i for i, w in enumerate(words) if w == "start" and i and words[i - 1].endswith("ray"))
    return start.make_context("start", words[at + 1:]).params


def start_command(commands: list[str]) -> tuple[dict, dict]:
    """The one command that runs `ray start`: (variables it exports first, parsed ray start flags)."""
    (command,) = [c for c in commands if "ray start" in c]
    env, params = {}, None
    for part in (p.strip() for p in command.split(";")):
        if part.startswith("export "):
            env.update(w.split("=", 1) for w in shlex.split(part)[1:])
        elif "ray start" in part:
            params = ray_start_params(part)
    return env, params


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_config_passes_rays_schema_and_ray_up_preparation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load(path)
    assert launcher_errors(cfg) == []
    # What `ray up` does before it calls the cloud: merge the provider defaults, check docker and the
    # node types (head type declared, sum of min_workers within max_workers), validate again.
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_launcher_schema_check_rejects_broken_configs():
    good = load(AWS)
    breakages = {
        "unknown top-level key": lambda c: c.update(dashboard_host="127.0.0.1"),
        "misspelt node-type key": lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=0),
        "unknown docker key": lambda c: c["docker"].update(imagee="x"),
        "GPU count as text": lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="1"),
        "missing provider": lambda c: c.pop("provider"),
    }
    for what, breakage in breakages.items():
        cfg = copy.deepcopy(good)
        breakage(cfg)
        assert launcher_errors(cfg), f"the schema check accepted a config with a {what}"


# Instance shapes the resources in the configs must match (the launcher does not detect GCP's).
SHAPES = {"g5.xlarge": {"CPU": 4, "GPU": 1}, "n1-standard-8": {"CPU": 8, "GPU": 1}}


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_has_a_cpu_head_and_autoscaled_single_gpu_workers(path):
    cfg = load(path)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    (worker,) = [t for name, t in types.items() if name != cfg["head_node_type"]]
    # The head takes no GPU and no CPU work: training and evaluation land on GPU workers only.
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert worker["min_workers"] == 0 and worker["max_workers"] == 4 <= cfg["max_workers"]
    node = worker["node_config"]
    if cfg["provider"]["type"] == "aws":
        assert head["node_config"]["InstanceType"] == "m5.2xlarge"
        assert worker["resources"] == SHAPES[node["InstanceType"]] and node["InstanceType"] == "g5.xlarge"
    else:
        assert cfg["provider"]["type"] == "gcp"
        assert head["node_config"]["machineType"] == "n2-standard-8"
        assert "guestAccelerators" not in head["node_config"]
        assert node["machineType"] == "n1-standard-8" and worker["resources"] == SHAPES[node["machineType"]]
        assert node["guestAccelerators"] == [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]
        assert {"onHostMaintenance": "TERMINATE"} in node["scheduling"]  # GCE refuses GPU VMs without it
    # Every node runs the image built from cluster/Dockerfile, re-pulled on `ray up`.
    assert cfg["docker"]["image"].endswith("/raykit:latest") and cfg["docker"]["pull_before_run"] is True


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_start_commands(path):
    cfg = load(path)
    head_env, head = start_command(cfg["head_start_ray_commands"])
    worker_env, worker = start_command(cfg["worker_start_ray_commands"])
    assert head["head"] and head["port"] == 6379
    assert head["dashboard_host"] == "127.0.0.1"   # reached through `ray dashboard` (SSH), never public
    assert head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert head["disable_usage_stats"] is True
    assert not worker["head"] and worker["address"] == "$RAY_HEAD_IP:6379"
    # Token auth on every node, with the token from the directory file_mounts ships to every node,
    # kept outside the checkout (never committed, never uploaded as a job's working_dir).
    for env in (head_env, worker_env):
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == f"{TOKEN_DIR}/auth_token"
    local_dir = Path(os.path.expanduser(cfg["file_mounts"][TOKEN_DIR]))
    assert not local_dir.resolve().is_relative_to(REPO)
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]  # `ray exec` shells too


def test_start_command_parser_rejects_unknown_flags():
    """The parse above is Ray's: a misspelt flag is an error, not silently ignored."""
    with pytest.raises(Exception, match="dashbaord"):
        ray_start_params("ray start --head --dashbaord-host=127.0.0.1")


# ---------------------------------------------------------------------------------------------------
# KubeRay manifests


def crd_schema(crd_file: str) -> dict:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay v1.7.0 CRDs not found: {CRDS} (the shared data folder next to the repo) is absent")
    return _crd_schema(crd_file)


@functools.cache
def _crd_schema(crd_file: str) -> dict:
    # The CRDs are 17-25k lines: parse each once, with libyaml when PyYAML has it.
    crd = yaml.load((CRDS / crd_file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"] | {"x-kind": crd["spec"]["names"]["kind"]}


def crd_errors(doc: dict, schema: dict) -> list[str]:
    """Type, enum and required-field errors, as the API server's OpenAPI validation would report."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


def unknown_fields(doc, schema: dict, path: str = "") -> list[str]:
    """Keys the schema does not declare. The CRDs do not forbid them, and the API server silently
    prunes them, so a misspelt field would simply vanish; here it is an error."""
    found = []
    if isinstance(doc, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, value in doc.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif extra is True or (props is None and extra is None):
                continue  # an open object, e.g. the top-level metadata (ObjectMeta)
            else:
                found.append(f"{path}.{key}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(doc):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def manifest_problems(doc: dict, schema: dict) -> list[str]:
    problems = crd_errors(doc, schema) + [f"unknown field {f}" for f in unknown_fields(doc, schema)]
    if doc.get("apiVersion") != "ray.io/v1" or doc.get("kind") != schema["x-kind"]:
        problems.append(f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}")
    mode = doc.get("spec", {}).get("submissionMode")
    if schema["x-kind"] == "RayJob" and mode not in SUBMISSION_MODES:
        problems.append(f"submissionMode {mode!r} is not one of {sorted(SUBMISSION_MODES)}")
    return problems


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_matches_the_v1_7_crd(path):
    assert manifest_problems(load(path), crd_schema(MANIFESTS[path])) == []


def test_kuberay_checks_reject_broken_manifests():
    cluster_schema, job_schema = crd_schema(MANIFESTS[RAYCLUSTER]), crd_schema(MANIFESTS[RAYJOB])
    good_cluster, good_job = load(RAYCLUSTER), load(RAYJOB)
    breakages = [
        ("misspelt spec field", cluster_schema, good_cluster,
         lambda d: d["spec"]["headGroupSpec"].update(rayStartParms={"num-cpus": "0"})),
        ("misspelt field deep in the pod template", cluster_schema, good_cluster,
         lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(resource={})),
        ("replica count as text", cluster_schema, good_cluster,
         lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="4")),
        ("auth mode outside the enum", cluster_schema, good_cluster,
         lambda d: d["spec"]["authOptions"].update(mode="tokens")),
        ("wrong kind", cluster_schema, good_cluster, lambda d: d.update(kind="RayJob")),
        ("unknown submission mode", job_schema, good_job, lambda d: d["spec"].update(submissionMode="K8sJob")),
        ("misspelt field inside rayClusterSpec", job_schema, good_job,
         lambda d: d["spec"]["rayClusterSpec"].update(enableInTreeAutoscalling=True)),
    ]
    for what, schema, good, breakage in breakages:
        doc = copy.deepcopy(good)
        breakage(doc)
        assert manifest_problems(doc, schema), f"the manifest check accepted a {what}"


def gpu_cluster_problems(spec: dict, crd_spec_props: dict) -> list[str]:
    problems = []
    if spec.get("rayVersion") != ray_version():
        problems.append(f"rayVersion {spec.get('rayVersion')} is not the pinned Ray {ray_version()}")
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("autoscaling off")
    if "authOptions" in crd_spec_props and spec.get("authOptions", {}).get("mode") != "token":
        problems.append("token authentication not requested (authOptions.mode)")
    head = spec["headGroupSpec"]
    if head.get("rayStartParams", {}).get("num-cpus") != "0":
        problems.append("the head accepts CPU work")
    if head.get("serviceType", "ClusterIP") != "ClusterIP" or head.get("enableIngress"):
        problems.append("the head Service is reachable from outside the cluster network")
    if "dashboard-host" in head.get("rayStartParams", {}):
        problems.append("dashboard-host set: leave it to KubeRay (the operator and submitter need it)")
    (group,) = spec["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    if container["resources"]["limits"].get("nvidia.com/gpu") != 1:
        problems.append("workers do not get exactly one GPU")
    if (group["minReplicas"], group["maxReplicas"]) != (0, 4):
        problems.append(f"worker replicas {group['minReplicas']}..{group['maxReplicas']}, not 0..4")
    for c in [*head["template"]["spec"]["containers"], container]:
        if not c["image"].endswith("/raykit:latest"):
            problems.append(f"{c['name']} does not run the image from cluster/Dockerfile")
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        problems += pod_lifecycle_problems(pod)
    return problems


def pod_lifecycle_problems(pod: dict) -> list[str]:
    """KubeRay's samples: each Ray container runs `ray stop` before its pod goes and keeps Ray's logs
    (/tmp/ray) in a volume of the pod."""
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if not command or command[-1].split() != ["ray", "stop"]:
            problems.append(f"{c['name']} has no preStop `ray stop` hook")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp/ray"), {}):
            problems.append(f"{c['name']} keeps /tmp/ray (Ray's logs) outside a pod volume")
    return problems


def test_kuberay_cluster_is_a_private_autoscaling_gpu_cluster():
    props = crd_schema(MANIFESTS[RAYCLUSTER])["properties"]["spec"]["properties"]
    assert "authOptions" in props and "token" in props["authOptions"]["properties"]["mode"]["enum"]
    spec = load(RAYCLUSTER)["spec"]
    assert gpu_cluster_problems(spec, props) == []
    # the same checks catch a cluster that lost its guard rails
    for breakage in (lambda s: s["headGroupSpec"].update(serviceType="LoadBalancer"),
                     lambda s: s.pop("authOptions"),
                     lambda s: s["headGroupSpec"]["rayStartParams"].update({"dashboard-host": "0.0.0.0"}),
                     lambda s: s["workerGroupSpecs"][0].update(minReplicas=1),
                     lambda s: s["headGroupSpec"]["template"]["spec"]["containers"][0].pop("lifecycle"),
                     lambda s: s["workerGroupSpecs"][0]["template"]["spec"].pop("volumes")):
        broken = copy.deepcopy(spec)
        breakage(broken)
        assert gpu_cluster_problems(broken, props)


def test_rayjob_runs_the_gpu_job_on_a_cluster_like_raycluster_yaml():
    job = load(RAYJOB)["spec"]
    assert job["rayClusterSpec"] == load(RAYCLUSTER)["spec"], "rayjob.yaml's cluster drifted from raycluster.yaml"
    assert job["submissionMode"] == "K8sJobMode"
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    # The entrypoint is a valid raykit command: its script and config exist and the spec validates.
    import raykit

    words = shlex.split(job["entrypoint"])
    assert words[:2] == ["python", "jobs/train.py"] and (REPO / words[1]).is_file()
    config, rest = words[2], words[3:]
    assert rest[::2] == ["--set"] * (len(rest) // 2)
    spec = raykit.load_spec(REPO / config, rest[1::2])
    assert spec.scaling.use_gpu is True and spec.scaling.num_workers == 2
    assert spec.storage.startswith("s3://")  # every pod must reach the runs, so not a local path
    env = yaml.safe_load(job["runtimeEnvYAML"])
    # working_dir is the image's copy of this checkout (Ray checks that a local working_dir exists,
    # and /home/ray/raykit exists only in the image): check it with this checkout in its place.
    assert env["working_dir"] == IMAGE_WORKDIR
    assert runtime_env_problems({**env, "working_dir": str(REPO)}) == []
    assert env["env_vars"] == load(RUNTIME_ENV)["env_vars"]


# ---------------------------------------------------------------------------------------------------
# runtime_env


def runtime_env_problems(env: dict) -> list[str]:
    """Ray's own checks of the fields, plus that the upload leaves out what must never be shipped."""
    from ray._private.runtime_env.packaging import _get_excludes
    from ray.runtime_env import RuntimeEnv

    problems = []
    if set(env) != {"working_dir", "excludes", "env_vars"}:
        problems.append(f"fields {sorted(env)}")  # RuntimeEnv accepts unknown fields (plugins): check here
    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as e:
        problems.append(str(e))
    excluded = _get_excludes(REPO, list(env.get("excludes") or []))
    for path in (".venv/bin/python", "runs/run-1/checkpoint_epoch=0001/model.pt", ".git/HEAD",
                 "runs/run-1/curves.png", "grid.png"):
        if not excluded(REPO / path):
            problems.append(f"{path} would be uploaded")
    for path in ("raykit/api.py", "jobs/train.py", "jobs/configs/digits_cnn_torch.yaml"):
        if excluded(REPO / path):
            problems.append(f"{path} would be left out")
    return problems


def test_runtime_env_yaml():
    env = load(RUNTIME_ENV)
    assert env["working_dir"] == "."
    assert env["excludes"] == [".venv/", "runs/", ".git/", "*.png"]
    assert env["env_vars"] == {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
                               "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
    assert runtime_env_problems(env) == []
    for breakage in (lambda e: e["env_vars"].update(TF_CPP_MIN_LOG_LEVEL=2),   # Ray wants strings
                     lambda e: e["excludes"].remove(".venv/"),
                     lambda e: e["excludes"].append("jobs/"),
                     lambda e: e.update(pip=["torch"])):
        broken = copy.deepcopy(env)
        breakage(broken)
        assert runtime_env_problems(broken)


# ---------------------------------------------------------------------------------------------------
# Dockerfile (no Docker engine here: read it)


def dockerfile_instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    return [" ".join(l.split()) for l in joined.splitlines() if l.strip()]


def dockerfile_problems(text: str) -> list[str]:
    """The image's base, layout and safety; how it installs (extras, constraints) is tests/test_image_install.py's."""
    lines = dockerfile_instructions(text)
    runs = " && ".join(l[4:] for l in lines if l.startswith("RUN "))
    problems = []
    base = [l for l in lines if l.startswith("FROM ")][-1]
    m = re.fullmatch(r"FROM rayproject/ray:(\d+\.\d+\.\d+)-py311-(gpu|cu\d+)", base)
    if not m or m.group(1) != ray_version():
        problems.append(f"base image {base!r} is not Ray {ray_version()}'s py311 GPU image")
    if "--no-deps" in runs:
        problems.append("an install skips dependencies (--no-deps): they would not be checked against the extras")
    if "tensorflow-cpu" in runs:
        problems.append("installs tensorflow-cpu")
    if "torch.version.cuda is None" not in runs or "tf.test.is_built_with_cuda()" not in runs:
        problems.append("the build does not fail on a CPU-only torch or TensorFlow")
    if f"WORKDIR {IMAGE_WORKDIR}" not in lines:
        problems.append(f"WORKDIR is not {IMAGE_WORKDIR}")
    env = dict(w.split("=", 1) for l in lines if l.startswith("ENV ") for w in shlex.split(l)[1:])
    if env.get("RAY_AUTH_MODE") != "token":
        problems.append("RAY_AUTH_MODE=token is not set")
    if any(l.startswith("EXPOSE ") for l in lines):
        problems.append("EXPOSEs ports")
    return problems


def test_dockerfile_builds_the_gpu_image():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv/", "runs/", ".git/"} <= set(ignored)
    for old, new in (("-py311-gpu", "-py311-cpu"), ("2.60.0-py311", "2.59.0-py311"),
                     ('pip install --no-cache-dir -c', 'pip install --no-deps --no-cache-dir -c'),
                     ('--extra-index-url "${TORCH_INDEX}" -e', '--extra-index-url "${TORCH_INDEX}" tensorflow-cpu -e'),
                     ("torch.version.cuda is None", "torch.version.hip is None"),
                     ("RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"),
                     ("WORKDIR /home/ray/raykit", "WORKDIR /home/ray")):
        assert old in text, old
        assert dockerfile_problems(text.replace(old, new)), f"accepted the Dockerfile with {new!r}"


# ---------------------------------------------------------------------------------------------------
# local.sh (never started here: --help, and a dry run with a stand-in ray that records any call)


def test_local_sh_syntax_and_help():
    assert subprocess.run(["bash", "-n", str(LOCAL_SH)], capture_output=True).returncode == 0
    assert os.access(LOCAL_SH, os.X_OK)
    help_ = subprocess.run([str(LOCAL_SH), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and "usage: cluster/local.sh start [N]" in help_.stdout
    assert subprocess.run([str(LOCAL_SH), "bogus"], capture_output=True, timeout=30).returncode == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_sh_start_commands_dry_run(tmp_path):
    fake = tmp_path / "venv" / "bin"
    fake.mkdir(parents=True)
    calls = tmp_path / "calls"
    (fake / "ray").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 1\n")
    (fake / "ray").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "RAYKIT_VENV": str(tmp_path / "venv"),
           "RAYKIT_DRY_RUN": "1", "RAYKIT_DASHBOARD_PORT": str(free_port())}
    out = subprocess.run([str(LOCAL_SH), "start", "3"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not calls.exists(), "the dry run called ray"
    starts = [ray_start_params(l[2:]) for l in out.stdout.splitlines() if l.startswith("+ ") and " start " in l]
    head, workers = starts[0], starts[1:]
    assert head["head"] and head["dashboard_host"] == "127.0.0.1" and head["node_ip_address"] == "127.0.0.1"
    assert json.loads(head["resources"]) == {"head_node": 1}
    assert len(workers) == 3
    for i, w in enumerate(workers, 1):
        assert w["address"] == f"127.0.0.1:{head['port']}" and w["node_ip_address"] == "127.0.0.1"
        assert w["num_cpus"] == 1 and w["num_gpus"] == 0 and json.loads(w["resources"]) == {f"worker_node_{i}": 1}
    # Several raylets on one machine: no port (or worker-port range) may be shared.
    ports = []
    for p in starts:
        ports += [p[k] for k in ("node_manager_port", "object_manager_port", "dashboard_agent_listen_port",
                                 "dashboard_agent_grpc_port", "runtime_env_agent_port", "metrics_export_port")]
        ports += range(p["min_worker_port"], p["max_worker_port"] + 1)
    ports += [head["port"], head["dashboard_port"]]
    assert len(ports) == len(set(ports)) and None not in ports
    assert "export RAY_AUTH_MODE=token" in out.stdout
    assert f"export RAY_API_SERVER_ADDRESS=http://127.0.0.1:{env['RAYKIT_DASHBOARD_PORT']}" in out.stdout
    for cmd in ("stop", "status"):
        line = subprocess.run([str(LOCAL_SH), cmd], env=env, capture_output=True, text=True, timeout=30).stdout
        assert line.split()[2:4] == (["stop", "--force"] if cmd == "stop" else ["status", "--address"])
    assert not calls.exists()


# ---------------------------------------------------------------------------------------------------
# Security: nothing public, token auth everywhere

EXPOSURES = [
    (r"0\.0\.0\.0|\[::\]|(?<![\w:])::(?![\w:])", "binds every interface"),
    (r"--dashboard-host[= ]+['\"]?(?!127\.0\.0\.1\b|localhost\b)", "dashboard not on loopback"),
    (r"dashboard-host['\"]?:\s*['\"]?(?!127\.0\.0\.1\b|localhost\b)", "dashboard not on loopback"),
    (r"--ray-client-server-port|containerPort:\s*10001\b", "exposes the Ray client server"),
    (r"--ray-debugger-external", "exposes the debugger"),
    (r"(serviceType|\btype):\s*['\"]?(LoadBalancer|NodePort)", "head Service reachable from outside the cluster"),
    (r"hostPort:|hostNetwork:\s*['\"]?true", "pod ports on the Kubernetes node's own address"),
    (r"enableIngress:\s*true|kind:\s*Ingress\b", "ingress to the head"),
    (r"\bEXPOSE\b", "image publishes ports"),
    (r"RAY_AUTH_MODE[=:]\s*['\"]?disabled|mode:\s*['\"]?disabled", "token auth turned off"),
    (r"IpPermissions|sourceRanges", "opens firewall ports"),
]


def exposure_problems(text: str) -> list[str]:
    """Exposing settings in the non-comment text of a shipped config."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        code = re.sub(r"(^|\s)#.*", "", line)
        problems += [f"line {n}: {why}: {line.strip()}" for pattern, why in EXPOSURES if re.search(pattern, code)]
    return problems


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_nothing_is_exposed_publicly(path):
    assert exposure_problems(path.read_text()) == []


def test_exposure_scan_catches_public_settings():
    for bad in ("ray start --head --dashboard-host=0.0.0.0", "ray start --head --dashboard-host 10.0.0.7",
                "      dashboard-host: '0.0.0.0'", '      dashboard-host: "10.1.2.3"',
                "    serviceType: LoadBalancer", "    serviceType: NodePort",
                "    headService: {spec: {type: LoadBalancer}}", "        type: NodePort",
                "  - {containerPort: 8265, hostPort: 8265}", "      hostNetwork: true",
                "ray start --head --ray-client-server-port=10001", "  - {containerPort: 10001, name: client}",
                "    enableIngress: true", "EXPOSE 8265", "export RAY_AUTH_MODE=disabled",
                "    mode: disabled", "ray start --head --node-ip-address=::"):
        assert exposure_problems(bad), bad
    assert exposure_problems("# a comment may say --dashboard-host=0.0.0.0 is wrong") == []


# The launcher's cloud firewalls: from outside the cluster, SSH only.
RAY_PORTS = {6379: "GCS", 8265: "dashboard/job API", 10001: "Ray client"}


def _public(cidr: str) -> bool:
    return not ipaddress.ip_network(cidr, strict=False).is_private


def aws_ingress_problems(cfg: dict) -> list[str]:
    """What the security group `ray up` gives these nodes admits from outside the cluster's own network.

    Ray builds the group's inbound rules itself (aws/config.py): all traffic from the cluster's own group,
    SSH from anywhere, plus provider.security_group.IpPermissions. They are computed here with that same
    function. A node type with its own SecurityGroupIds or NetworkInterfaces skips the group, and its
    rules live outside this repository, so that is a problem too."""
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    problems = [f"{name}: {key} bypasses the cluster's security group"
                for name, node_type in cfg["available_node_types"].items()
                for key in ("SecurityGroupIds", "NetworkInterfaces") if key in node_type["node_config"]]
    extra = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in _create_default_inbound_rules({"sg-of-this-cluster"}, extra):
        sources = [r["CidrIp"] for r in rule.get("IpRanges", []) if _public(r["CidrIp"])]
        sources += [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", []) if _public(r["CidrIpv6"])]
        sources += [r["PrefixListId"] for r in rule.get("PrefixListIds", [])]
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        every_port = rule.get("IpProtocol") in ("-1", "all") or low == -1
        if not sources or (rule.get("IpProtocol") == "tcp" and low == high == 22):
            continue
        opened = [f"{port} ({what})" for port, what in RAY_PORTS.items() if every_port or low <= port <= high]
        problems.append(f"{rule.get('IpProtocol')} {low}-{high} open to {sources}"
                        + (f": exposes {', '.join(opened)}" if opened else ""))
    return problems


def test_aws_security_group_admits_only_ssh_from_outside():
    assert aws_ingress_problems(load(AWS)) == []
    public = {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    for breakage in (
            lambda c: c["provider"].update(security_group={"IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, **public}]}),
            lambda c: c["provider"].update(security_group={"IpPermissions": [
                {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]}),
            lambda c: c["provider"].update(security_group={"IpPermissions": [
                {"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 11000, "IpRanges": [{"CidrIp": "8.8.0.0/16"}]}]}),
            lambda c: c["available_node_types"]["head_cpu"]["node_config"].update(SecurityGroupIds=["sg-open"])):
        broken = copy.deepcopy(load(AWS))
        breakage(broken)
        assert aws_ingress_problems(broken), broken["provider"]
    # a rule limited to a private range (e.g. a VPN) is the cluster network's business: allowed
    vpn = copy.deepcopy(load(AWS))
    vpn["provider"]["security_group"] = {"IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.8.0.0/16"}]}]}
    assert aws_ingress_problems(vpn) == []


def gcp_network_problems(cfg: dict) -> list[str]:
    """Ray's GCP launcher creates no firewall rules: a node gets its network's. Left without
    networkInterfaces, a node type joins the first subnet Ray lists in the region, of whichever network
    (gcp/config.py, _configure_subnet), so every node type must name the default network's subnet,
    whose firewall admits only SSH/RDP/ICMP from outside (cluster/README.md says how to check)."""
    subnet = f"regions/{cfg['provider']['region']}/subnetworks/default"
    problems = []
    for name, node_type in cfg["available_node_types"].items():
        config = node_type["node_config"]
        interfaces = config.get("networkInterfaces")
        if not interfaces:
            problems.append(f"{name}: no networkInterfaces: Ray picks the first subnet of any network")
        elif [i.get("subnetwork") for i in interfaces] != [subnet] or any("network" in i for i in interfaces):
            problems.append(f"{name}: joins {interfaces}, not the default network's {subnet}")
        if config.get("tags"):
            problems.append(f"{name}: network tags {config['tags']} (firewall rules may target them)")
    return problems


def test_gcp_nodes_join_the_default_network_only():
    assert gcp_network_problems(load(GCP)) == []
    for breakage in (lambda n: n.pop("networkInterfaces"),
                     lambda n: n["networkInterfaces"][0].update(subnetwork="regions/us-central1/subnetworks/open"),
                     lambda n: n["networkInterfaces"][0].update(network="global/networks/open"),
                     lambda n: n.update(tags={"items": ["http-server"]})):
        broken = copy.deepcopy(load(GCP))
        breakage(broken["available_node_types"]["gpu_worker"]["node_config"])
        assert gcp_network_problems(broken)


def test_token_auth_is_configured_everywhere():
    for path in LAUNCHERS:
        cfg = load(path)
        for commands in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
            assert start_command(commands)[0]["RAY_AUTH_MODE"] == "token", path.name
    assert "RAY_AUTH_MODE=token" in " ".join(l for l in dockerfile_instructions(DOCKERFILE.read_text())
                                              if l.startswith("ENV "))
    assert re.search(r"^\s*export RAY_AUTH_MODE=token\s*$", LOCAL_SH.read_text(), re.M)


def test_kuberay_token_auth_is_configured():
    crd_props = crd_schema(MANIFESTS[RAYCLUSTER])["properties"]["spec"]["properties"]
    if "authOptions" in crd_props:  # KubeRay >= 1.5: the operator creates and distributes the token
        assert load(RAYCLUSTER)["spec"]["authOptions"]["mode"] == "token"
        assert load(RAYJOB)["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


# ---------------------------------------------------------------------------------------------------
# cluster/README.md documents every file and every placeholder


def test_cluster_readme_covers_every_file_and_placeholder():
    readme = (CLUSTER / "README.md").read_text()
    files = [p for p in CLUSTER.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.name != "README.md"]
    for p in [*files, RUNTIME_ENV]:
        name = p.relative_to(REPO).as_posix()
        assert name in readme or p.relative_to(CLUSTER).as_posix() in readme, f"{name} is not explained"
    placeholders = set()
    for p in [*files, RUNTIME_ENV]:
        placeholders |= set(re.findall(r"YOUR-[A-Z0-9-]*[A-Z0-9]", p.read_text()))
    assert placeholders and all(ph in readme for ph in placeholders), placeholders - set(re.findall(r"YOUR-[A-Z0-9-]*[A-Z0-9]", readme))
