"""Fixtures for the operator's tests: a real Kubernetes control plane on loopback, and the operator itself.

``control_plane`` (session) builds etcd, kube-apiserver and kube-controller-manager once with
scripts/build-controlplane.sh (cached outside the repository), starts them on 127.0.0.1 (token
authentication for an admin, service-account keys, RBAC), and yields a kubeconfig. Without Go the tests
that need it are skipped, unless SPENDMETER_REQUIRE_CONTROLPLANE=1 (CI), where that is a failure.
There is no kubelet: pods stay Pending, and what is tested is what the API server stores.
The budget tests take Prometheus from ``tests/prometheus_server.py``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from spendmeter_operator import certificates

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-controlplane.sh"
CRDS = ROOT / "crds"
NO_GO = 3  # the build script's exit status when Go is missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # the API may not answer yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


@dataclass
class ControlPlane:
    kubeconfig: Path
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self) -> Any:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))


def build_control_plane() -> Path:
    require = os.environ.get("SPENDMETER_REQUIRE_CONTROLPLANE") == "1"
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode == NO_GO and not require:
        pytest.skip(
            "Go is not installed, so the Kubernetes control plane cannot be built (see scripts/build-controlplane.sh)"
        )
    if proc.returncode != 0:
        pytest.fail(f"building the control plane failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _start(cp: ControlPlane, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(cp.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cp.processes.append(proc)
    return proc


def _log_tail(cp: ControlPlane, name: str) -> str:
    path = cp.workdir / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = build_control_plane()
    with running_control_plane(bin_dir, tmp_path_factory.mktemp("controlplane")) as cp:
        yield cp


@contextlib.contextmanager
def running_control_plane(bin_dir: Path, work: Path) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager from ``bin_dir``, on loopback, until the block ends."""
    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "sa.key").write_bytes(
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (work / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ca, cert, key = certificates.make_certificates(["127.0.0.1", "localhost"]).write(work / "serving")
    token = secrets.token_hex(16)
    (work / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {
                    "server": f"https://127.0.0.1:{api_port}",
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                }}],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                "current-context": "test",
            }
        )
    )  # fmt: skip
    cp = ControlPlane(kubeconfig, work)
    try:
        _start(cp, "etcd", [
            str(bin_dir / "etcd"), "--name", "test", "--data-dir", str(work / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        apiserver = _start(cp, "kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
            "--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--cert-dir", str(work / "certs"),
            "--client-ca-file", str(ca),
            "--token-auth-file", str(work / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(work / "sa.pub"),
            "--service-account-signing-key-file", str(work / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
        ])  # fmt: skip
        client = cp.client()
        version = kubernetes.client.VersionApi(client)

        def api_ready() -> bool:
            if apiserver.poll() is not None:
                raise AssertionError(f"kube-apiserver exited:\n{_log_tail(cp, 'kube-apiserver')}")
            return bool(version.get_code().git_version)

        wait_for(api_ready, 90, "kube-apiserver to answer")
        _start(cp, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(kubeconfig),
            "--service-account-private-key-file", str(work / "sa.key"),
            "--root-ca-file", str(ca),
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--controllers", "*",
            "--concurrent-deployment-syncs", "2", "--concurrent-replicaset-syncs", "2",
        ])  # fmt: skip
        core = kubernetes.client.CoreV1Api(client)
        wait_for(lambda: core.read_namespaced_service_account("default", "default"), 60,
                 "the controller-manager to create the default service account")  # fmt: skip
        install_crds(client)
        yield cp
    finally:
        for proc in reversed(cp.processes):
            proc.terminate()
        for proc in reversed(cp.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def install_crds(client: Any) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(client)
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            ext.create_custom_resource_definition(doc)
            names.append(doc["metadata"]["name"])

    def established() -> bool:
        for name in names:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_for(established, 30, "the CRDs to be established")


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    health_port: int
    webhook_port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_operator(cp: ControlPlane, name: str, *extra: str) -> OperatorProcess:
    """``spendmeter operator`` against the control plane, its webhook on 127.0.0.1; waits for /readyz."""
    import urllib.request

    health, webhook = free_port(), free_port()
    log = cp.workdir / f"{name}.log"
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    argv = [sys.executable, "-m", "spendmeter_proxy", "operator", "--webhook-listen", "127.0.0.1",
            "--webhook-port", str(webhook), "--health-port", str(health), "--namespace", "spendmeter-system",
            "--cost-label", "team", *extra]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    op = OperatorProcess(proc, log, health, webhook)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited:\n{op.output()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_for(ready, 60, "the operator to be ready")
    except BaseException:
        op.stop()
        raise
    return op


def create_namespace(client: Any, name: str, labels: dict[str, str] | None = None) -> str:
    """A namespace, once its default ServiceAccount exists (the controller-manager makes it)."""
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    wait_for(lambda: core.read_namespaced_service_account("default", name), 60, f"service account in {name}")
    return name


def create_deployment(client: Any, ns: str, name: str, annotations: dict[str, str]) -> None:
    """A one-replica Deployment whose pod template carries ``annotations`` and a ``team`` label."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "team": "search"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }
    kubernetes.client.AppsV1Api(client).create_namespaced_deployment(ns, body)


def pod_of(client: Any, ns: str, app: str) -> dict[str, Any]:
    """The stored pod of the Deployment ``app`` (once the controller-manager has made it), as a dict."""
    core = kubernetes.client.CoreV1Api(client)
    pods = wait_for(
        lambda: core.list_namespaced_pod(ns, label_selector=f"app={app}").items, 60, f"a pod of {ns}/{app}"
    )
    result: dict[str, Any] = client.sanitize_for_serialization(pods[0])
    return result


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env") or ()}
