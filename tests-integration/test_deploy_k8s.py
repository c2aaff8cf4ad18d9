"""Kubernetes manifests, checked without a cluster.

Every document in k8s/ is validated by kubernetes-validate against the pinned Kubernetes
version's OpenAPI schemas (shipped inside the package: no network), strictly (unknown fields
are errors). Then what a schema cannot see: probes, security context, references between
objects (ConfigMaps, Secrets, PVCs, Service and HPA targets) and the Indexed Job's shard ranges,
whose formula is run both as a function and as the container's own shell command.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from des_packer import shard_range
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.heavy  # left out of the quick run: tools/test --quick

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30.0"
MANIFESTS = sorted(K8S.glob("*.yaml"))
IMAGES = {"ghcr.io/your-org/des-http", "ghcr.io/your-org/des-packer"}


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    (match,) = [d for d in all_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return match


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        spec: dict[str, Any] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = doc["spec"]["template"]["spec"]
    return spec


WORKLOADS = ("Deployment", "Job", "CronJob")


def workloads() -> list[dict[str, Any]]:
    return [d for d in all_documents() if d["kind"] in WORKLOADS]


# ------------------------------------------------------------------------------- schema checks


def test_the_expected_manifests_are_there() -> None:
    assert [p.name for p in MANIFESTS] == [
        "des-http-deployment.yaml",
        "des-http-hpa.yaml",
        "des-http-pdb.yaml",
        "des-http-secret.yaml",
        "des-http-service.yaml",
        "des-migrate-cronjob.yaml",
        "des-migrate-secret.yaml",
        "des-packer-cronjob.yaml",
        "des-packer-indexed-job.yaml",
        "des-packer-job.yaml",
        "des-storage.yaml",
    ]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in all_documents())
    assert kinds == [
        ("ConfigMap", "des-http-config"),
        ("ConfigMap", "des-migrate-config"),
        ("CronJob", "des-migrate"),
        ("CronJob", "des-packer"),
        ("Deployment", "des-http"),
        ("HorizontalPodAutoscaler", "des-http"),
        ("Job", "des-packer"),
        ("Job", "des-packer-indexed"),
        ("PersistentVolumeClaim", "des-input"),
        ("PersistentVolumeClaim", "des-output"),
        ("PersistentVolumeClaim", "des-source-files"),
        ("PodDisruptionBudget", "des-http"),
        ("Secret", "des-http-secrets"),
        ("Secret", "des-migrate-secrets"),
        ("Service", "des-http"),
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_for_the_pinned_kubernetes_version(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_command_passes_on_every_manifest() -> None:
    """The same check as an operator runs it: the CLI, all files, strict, quiet."""
    command = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(command), "-k", KUBERNETES_VERSION, "--strict", "--quiet", *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["spec"].__setitem__("replica", 2), "replica"),
        (lambda d: pod_spec(d)["containers"][0].__setitem__("ports", "8000"), "'8000'"),
        (lambda d: d["spec"].pop("selector"), "selector"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required"],
)
def test_validation_rejects_broken_manifests(mutate: Any, fragment: str) -> None:
    deployment = copy.deepcopy(find("Deployment", "des-http"))
    mutate(deployment)
    with pytest.raises(kubernetes_validate.ValidationError, match=fragment):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------------- des-http


def test_des_http_deployment_probes_resources_and_security() -> None:
    deployment = find("Deployment", "des-http")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "readinessProbe", "exec")
    assert 'urllib.request.Request("http://127.0.0.1:8000/ready", headers=headers)' in probe[2]
    assert 'os.environ.get("DES_PROBE_TOKEN")' in probe[2]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsUser"] == 10001
    # A read-only root needs a writable /tmp (prometheus multiprocess files live there).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    config = find("ConfigMap", "des-http-config")["data"]
    assert config["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_des_http_config_from_configmap_and_secrets_from_secret() -> None:
    (container,) = pod_spec(find("Deployment", "des-http"))["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "des-http-config"}}]
    config = find("ConfigMap", "des-http-config")["data"]
    assert config["DES_BACKEND"] in {"local", "s3", "multi_s3"}
    assert not any("SECRET" in key or "PASSWORD" in key for key in config)
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_env == {
        "AWS_ACCESS_KEY_ID": {"name": "des-http-secrets", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "des-http-secrets", "key": "AWS_SECRET_ACCESS_KEY"},
        "DES_PROBE_TOKEN": {"name": "des-http-secrets", "key": "probe-token"},
    }
    # Auth tokens: a file from the Secret, where DES_AUTH_TOKENS_FILE points.
    volumes = {v["name"]: v for v in pod_spec(find("Deployment", "des-http"))["volumes"]}
    tokens = volumes["auth-tokens"]["secret"]
    assert tokens["secretName"] == "des-http-secrets"
    assert tokens["items"] == [{"key": "tokens", "path": "tokens"}]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "auth-tokens"]
    assert f"{mount['mountPath']}/tokens" == config["DES_AUTH_TOKENS_FILE"]
    assert "tokens" in find("Secret", "des-http-secrets")["stringData"]


def test_service_and_autoscaler_target_the_deployment() -> None:
    deployment = find("Deployment", "des-http")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "des-http")
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = find("HorizontalPodAutoscaler", "des-http")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "des-http",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find("PodDisruptionBudget", "des-http")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "drains can still evict"
    # Scaling on CPU utilisation needs a CPU request to measure against.
    (container,) = pod_spec(deployment)["containers"]
    assert "cpu" in container["resources"]["requests"]


# ------------------------------------------------------------------------- every workload


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_workload_is_non_root_with_a_read_only_root(doc: dict[str, Any]) -> None:
    spec = pod_spec(doc)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001, "the images' uid"
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        image, _, tag = container["image"].rpartition(":")
        assert image in IMAGES
        assert tag
        assert tag != "latest"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert "memory" in container["resources"]["limits"]


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_reference_resolves_to_an_object_in_k8s(doc: dict[str, Any]) -> None:
    defined = {(d["kind"], d["metadata"]["name"]) for d in all_documents()}
    spec = pod_spec(doc)
    wanted: set[tuple[str, str]] = set()
    for volume in spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            wanted.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        if "configMap" in volume:
            wanted.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            wanted.add(("Secret", volume["secret"]["secretName"]))
    for container in spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                wanted.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                wanted.add(("Secret", source["secretRef"]["name"]))
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                wanted.add(("Secret", ref["secretKeyRef"]["name"]))
                secret = find("Secret", ref["secretKeyRef"]["name"])
                assert ref["secretKeyRef"]["key"] in secret["stringData"]
            if "configMapKeyRef" in ref:
                wanted.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
        mounted = {m["name"] for m in container.get("volumeMounts", [])}
        assert mounted <= {v["name"] for v in spec.get("volumes", [])}
    assert wanted <= defined


def test_example_secrets_hold_no_real_values() -> None:
    for doc in all_documents():
        if doc["kind"] != "Secret":
            continue
        assert "data" not in doc, "examples use stringData placeholders"
        for key, value in doc["stringData"].items():
            assert value == "REPLACE_ME" or value.lstrip().startswith("#"), key


# ----------------------------------------------------------------------------------- packers


def test_packer_job_and_cronjob_run_des_pack_on_the_mounted_volumes() -> None:
    job = find("Job", "des-packer")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["des-pack"]
    args = container["args"]
    assert args[args.index("--input-json") + 1].startswith("/data/input/")
    assert args[args.index("--output-dir") + 1] == "/data/output"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data/input"]["readOnly"] is True
    assert "readOnly" not in mounts["/data/output"]
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_packer_cronjob_never_overlaps_itself() -> None:
    cron = find("CronJob", "des-packer")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    (container,) = pod_spec(cron)["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0]
    assert "exec des-pack" in script
    assert "date -u -d yesterday +%Y%m%d" in script


def test_migrator_cronjob_has_its_configmap_secret_and_pvc() -> None:
    cron = find("CronJob", "des-migrate")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cron)
    (container,) = spec["containers"]
    assert container["command"] == ["des-migrate"]
    assert container["args"][:2] == ["--config", "/etc/des-migrate/migration-config.yaml"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "des-migrate-config"
    assert volumes["source-files"]["persistentVolumeClaim"]["claimName"] == "des-source-files"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert env == dict.fromkeys(
        ["DB_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], "des-migrate-secrets"
    )
    config = yaml.safe_load(
        find("ConfigMap", "des-migrate-config")["data"]["migration-config.yaml"]
    )
    assert "${DB_PASSWORD}" in config["database"]["url"]
    assert config["migration"]["delete_source_files"] is False
    # Sources are mounted read-only exactly while the config keeps them.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "source-files"]
    assert mount["readOnly"] is True


def test_migrator_configmap_is_a_valid_des_migrate_config() -> None:
    from des_migrate import parse_config

    text = find("ConfigMap", "des-migrate-config")["data"]["migration-config.yaml"]
    config = parse_config(yaml.safe_load(text), env={"DB_PASSWORD": "pw"})
    assert config.packer.output_dir == "s3://des-shards/des"
    assert config.packer.n_bits == 8
    assert config.database.table_name == "files"


# ------------------------------------------------------------------------- the Indexed Job


def indexed_job() -> dict[str, Any]:
    return find("Job", "des-packer-indexed")


def test_indexed_job_settings_agree() -> None:
    job = indexed_job()
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"]
    (container,) = pod_spec(job)["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["DES_PACKERS"]) == job["spec"]["completions"]
    assert '--n-bits "${DES_N_BITS}"' in container["args"][0]
    assert '--shard-range "${range}"' in container["args"][0]
    assert "python -m des_packer.shard_range" in container["args"][0]


def covered(count: int, n_bits: int) -> list[int]:
    """Every shard index the `count` pods pack, in pod order, with repeats kept."""
    indexes: list[int] = []
    for i in range(count):
        start, end = shard_range.plan_shard_range(i, count, n_bits)
        indexes.extend(range(start, end + 1))
    return indexes


@pytest.mark.parametrize("n_bits", range(4, 17))
def test_ranges_cover_every_shard_index_exactly_once(n_bits: int) -> None:
    for count in range(1, 17):
        assert covered(count, n_bits) == list(range(1 << n_bits)), (count, n_bits)


@given(n_bits=st.integers(1, 16), data=st.data())
def test_ranges_are_contiguous_and_balanced(n_bits: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 1 << n_bits))
    ranges = [shard_range.plan_shard_range(i, count, n_bits) for i in range(count)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == (1 << n_bits) - 1
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start == end + 1
    sizes = {end - start + 1 for start, end in ranges}
    assert min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1


def test_formula_examples() -> None:
    plan = shard_range.plan_shard_range
    assert [plan(i, 4, 8) for i in range(4)] == [(0, 63), (64, 127), (128, 191), (192, 255)]
    assert [plan(i, 3, 8) for i in range(3)] == [(0, 84), (85, 169), (170, 255)]
    assert plan(0, 1, 16) == (0, 65535)


@pytest.mark.parametrize(
    ("index", "count", "n_bits", "message"),
    [
        (0, 0, 8, "the number of packers must be between 1 and 2**n_bits = 256, got 0"),
        (0, 17, 4, "the number of packers must be between 1 and 2**n_bits = 16, got 17"),
        (4, 4, 8, "the completion index must be between 0 and 3, got 4"),
        (-1, 4, 8, "the completion index must be between 0 and 3, got -1"),
        (0, 1, 0, "n_bits must be between 1 and 16, got 0"),
        (0, 1, 17, "n_bits must be between 1 and 16, got 17"),
    ],
)
def test_formula_rejects_impossible_settings(
    index: int, count: int, n_bits: int, message: str
) -> None:
    with pytest.raises(ValueError, match=r"^" + message.replace("*", r"\*") + "$"):
        shard_range.plan_shard_range(index, count, n_bits)


@pytest.mark.parametrize(
    ("env", "stderr"),
    [
        ({"DES_PACKERS": "4"}, "shard_range: JOB_COMPLETION_INDEX is not set\n"),
        (
            {"JOB_COMPLETION_INDEX": "x", "DES_PACKERS": "4"},
            "shard_range: JOB_COMPLETION_INDEX must be an integer, got 'x'\n",
        ),
        (
            {"JOB_COMPLETION_INDEX": "0", "DES_PACKERS": "4", "DES_N_BITS": "1"},
            "shard_range: the number of packers must be between 1 and 2**n_bits = 2, got 4\n",
        ),
    ],
)
def test_tool_exits_2_with_a_message_on_bad_environment(
    env: dict[str, str], stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shard_range.main(env) == 2
    assert capsys.readouterr() == ("", stderr)


def fake_des_pack(bin_dir: Path) -> None:
    """A des-pack stand-in on PATH that prints the arguments it was given, one per line."""
    bin_dir.mkdir()
    script = bin_dir / "des-pack"
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    # The workspace's interpreter (a wrapper, not a symlink: a symlink outside the virtual
    # environment would not find its packages), which has des-packer installed as the image has.
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("count", [1, 3, 4, 7, 16])
def test_the_jobs_own_command_packs_disjoint_ranges_covering_every_shard(
    count: int, tmp_path: Path
) -> None:
    """Run the container's shell script as Kubernetes would, once per completion index."""
    (container,) = pod_spec(indexed_job())["containers"]
    command = [*container["command"], *container["args"]]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2]
    env_defaults = {e["name"]: e["value"] for e in container["env"]}
    fake_des_pack(tmp_path / "bin")
    seen: list[int] = []
    for index in range(count):
        env = {
            **env_defaults,
            "DES_PACKERS": str(count),
            "JOB_COMPLETION_INDEX": str(index),
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }
        result = subprocess.run(
            ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert (
            lines[0]
            == f"packer {index} of {count}: shard indexes "
            + lines[lines.index("--shard-range") + 1]
        )
        argv = lines[1:]
        assert argv[argv.index("--n-bits") + 1] == "8"
        start, end = map(int, argv[argv.index("--shard-range") + 1].split("-"))
        assert (start, end) == shard_range.plan_shard_range(index, count, 8)
        seen.extend(range(start, end + 1))
    assert seen == list(range(256))


def test_the_job_runs_the_tool_the_packer_image_installs() -> None:
    """The Job runs ``python -m des_packer.shard_range``: a module of des-packer, which the
    packer image installs (through des-migrate), not a file copied beside it."""
    dockerfile = (ROOT / "docker" / "des-packer.Dockerfile").read_text()
    (container,) = pod_spec(indexed_job())["containers"]
    (module,) = re.findall(r"python -m (\S+)\)", container["args"][0])
    assert module == "des_packer.shard_range"
    assert importlib.util.find_spec(module) is not None
    assert "--package des-migrate" in dockerfile
    assert "shard_range" not in dockerfile


def test_des_pack_accepts_every_range_the_tool_prints() -> None:
    """The tool's "start-end" is what des-pack's --shard-range parses (inclusive, decimal)."""
    import des_packer

    for n_bits in (4, 8, 12, 16):
        for count in range(1, 17):
            for index in range(count):
                start, end = shard_range.plan_shard_range(index, count, n_bits)
                text = f"{start}-{end}"
                assert des_packer.parse_shard_range(text, n_bits) == (start, end)


# -------------------------------------------------- options the manifests pass exist


def command_options(argv: list[str]) -> dict[str, set[str]]:
    """{command: --options} used by a container's command and args (shell scripts included)."""
    found: dict[str, set[str]] = {}
    words: list[str] = []
    for part in argv:
        words.extend(re.split(r"[\s\\]+", part))
    command = None
    for raw in words:
        word = raw.strip("\"'")
        if word in {"des-pack", "des-migrate", "des", "des-stats", "des-http", "uvicorn"}:
            command = word
            found.setdefault(command, set())
        elif command and re.fullmatch(r"--[a-z][a-z0-9-]*", word):
            found[command].add(word)
    return found


def help_text(command: str) -> str:
    executable = Path(sys.executable).parent / command
    result = subprocess.run(
        [str(executable), "--help"],
        env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("doc", workloads(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_option_a_workload_passes_is_one_its_command_accepts(doc: dict[str, Any]) -> None:
    for container in pod_spec(doc)["containers"]:
        used = command_options([*container.get("command", []), *container.get("args", [])])
        assert used, "the container names its command"
        for command, options in used.items():
            text = help_text(command)
            unknown = sorted(o for o in options if not re.search(rf"{o}(?![a-z-])", text))
            assert unknown == [], f"{command} does not accept {unknown}"


def test_compose_packer_options_are_accepted_and_unknown_ones_are_caught() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["des-packer"]["command"]
    used = command_options(command)
    assert set(used) == {"des-pack"}
    text = help_text("des-pack")
    assert all(re.search(rf"{o}(?![a-z-])", text) for o in used["des-pack"])
    # The check can fail: an option des-pack does not have is not found in its help.
    assert command_options(["des-pack --input-jsonl x"]) == {"des-pack": {"--input-jsonl"}}
    assert not re.search(r"--input-jsonl(?![a-z-])", text)


def test_des_http_start_script_empties_the_metrics_dir_then_execs_des_http(tmp_path: Path) -> None:
    (container,) = pod_spec(find("Deployment", "des-http"))["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    config = find("ConfigMap", "des-http-config")["data"]
    assert config["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/des-metrics"
    metrics = tmp_path / "des-metrics"
    metrics.mkdir()
    (metrics / "counter_12.db").write_bytes(b"stale")
    (metrics / "sub").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "des-http"
    fake.write_text(
        '#!/bin/sh\nls -A "$PROMETHEUS_MULTIPROC_DIR" | wc -l\nfor a in "$@"; do echo "$a"; done\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["/bin/sh", "-c", container["args"][0]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.split()
    assert lines == [
        "0", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-server-header",
    ]  # fmt: skip
    # A first start, with no directory yet, creates it.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "new" / "des-metrics")
    result = subprocess.run(
        ["/bin/sh", "-c", container["args"][0]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout.split()[0]) == (0, "0")


def test_packer_cronjob_script_packs_yesterdays_manifest(tmp_path: Path) -> None:
    (container,) = pod_spec(find("CronJob", "des-packer"))["containers"]
    fake_des_pack(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "TZ": "UTC"}

    def yesterday() -> str:
        return subprocess.run(
            ["date", "-u", "-d", "yesterday", "+%Y%m%d"], capture_output=True, text=True, check=True
        ).stdout.strip()

    before = yesterday()
    result = subprocess.run(
        [*container["command"], container["args"][0]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    days = {before, yesterday()}  # the same day unless the test straddles midnight
    assert argv[argv.index("--input-json") + 1] in {
        f"/data/input/manifests/{d}.jsonl" for d in days
    }
    assert argv[argv.index("--output-dir") + 1] == "/data/output"
