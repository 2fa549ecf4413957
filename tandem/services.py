"""Local services: Redis, Apache Kafka (KRaft) and the MLflow tracking server.

`tandem services up|down|status` starts them on loopback, each health-checked,
idempotently, with PID files and logs under `.tandem/run/`. A service whose
address in settings is not on this machine is treated as external: tandem
checks it but never starts or stops it, which is how a cluster replaces it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem.settings import Settings, is_loopback

RESOURCES = Path(__file__).resolve().parent / "resources"

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class ServiceError(RuntimeError):
    """A service that could not be started, stopped or reached; the message says why."""


@dataclass
class ServiceStatus:
    name: str
    address: str
    state: str  # running | stopped | external | unhealthy | external-unreachable
    pid: int | None = None
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.state in ("running", "external")


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, URL-safe base64 without padding, never starting with '-' (the storage
    tool's argument parser would read that as an option; Kafka's own Uuid.randomUuid avoids it the same way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalService:
    """One process tandem runs locally: how to prepare it, start it and tell it is healthy."""

    name: str = ""
    start_timeout: float = 60.0

    def __init__(self, settings: Settings):
        self.settings = settings

    # --- what each service defines -------------------------------------------------
    def host_port(self) -> tuple[str, int]:
        raise NotImplementedError

    def address(self) -> str:
        raise NotImplementedError

    def prepare(self, report: Report) -> None:
        """Install or initialise what the service needs before its first start."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def after_start(self, report: Report) -> None:
        """Work that needs the service up (e.g. creating topics)."""

    def extra_ports(self) -> list[int]:
        return []

    # --- shared mechanics -------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.log"

    def is_external(self) -> bool:
        return not is_loopback(self.host_port()[0])

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> ServiceStatus:
        addr = self.address()
        if self.is_external():
            ok = self._safe_healthy()
            return ServiceStatus(self.name, addr, "external" if ok else "external-unreachable",
                                 detail="" if ok else "not reachable")
        pid = self.pid()
        if pid is None:
            return ServiceStatus(self.name, addr, "stopped")
        if self._safe_healthy():
            return ServiceStatus(self.name, addr, "running", pid)
        return ServiceStatus(self.name, addr, "unhealthy", pid, detail=f"see {self.log_file}")

    def _safe_healthy(self) -> bool:
        try:
            return self.healthy()
        except Exception:  # noqa: BLE001 - any failure to reach it means "not healthy"
            return False

    def up(self, report: Report = _quiet) -> ServiceStatus:
        if self.is_external():
            st = self.status()
            if not st.healthy:
                raise ServiceError(f"{self.name}: external address {st.address} is not reachable")
            report(f"{self.name}: external at {st.address}, not managed locally")
            return st
        pid = self.pid()
        if pid is not None:
            if self._wait_healthy(pid, timeout=self.start_timeout):
                report(f"{self.name}: already running (pid {pid}) at {self.address()}")
                return self.status()
            raise ServiceError(f"{self.name}: pid {pid} is running but not healthy; see {self.log_file}\n"
                               f"{_tail(self.log_file)}")
        host, port = self.host_port()
        for p in [port, *self.extra_ports()]:
            if port_open(host, p):
                raise ServiceError(f"{self.name}: port {p} on {host} is taken by another process "
                                   f"(not started by tandem); stop it or change the address in settings")
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare(report)
        report(f"{self.name}: starting on {self.address()}")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=str(self.settings.home), env=self.environment())
        self.pid_file.write_text(str(proc.pid))
        if not self._wait_healthy(proc.pid, timeout=self.start_timeout, proc=proc):
            code = proc.poll()
            self._kill(proc.pid)
            why = f"exited with code {code}" if code is not None else f"not healthy after {self.start_timeout:.0f}s"
            raise ServiceError(f"{self.name}: {why}; last lines of {self.log_file}:\n{_tail(self.log_file)}")
        self.after_start(report)
        report(f"{self.name}: running (pid {proc.pid}) at {self.address()}")
        return self.status()

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_healthy(self, pid: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            if proc is None and not _pid_alive(pid):
                return False
            if self._safe_healthy():
                return True
            time.sleep(0.3)
        return False

    def down(self, report: Report = _quiet, hard: bool = False) -> None:
        if self.is_external():
            report(f"{self.name}: external, left alone")
            return
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            report(f"{self.name}: not running")
            return
        self._kill(pid, hard=hard)
        self.pid_file.unlink(missing_ok=True)
        report(f"{self.name}: stopped")

    def _kill(self, pid: int, hard: bool = False, grace: float = 30.0) -> None:
        sig = signal.SIGKILL if hard else signal.SIGTERM
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # reap our own child, if it is one
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        # the listening port may linger briefly after the process is gone
        host, port = self.host_port()
        deadline = time.monotonic() + 10
        while port_open(host, port) and time.monotonic() < deadline:
            time.sleep(0.1)


class RedisService(LocalService):
    name = "redis"
    start_timeout = 20.0

    def host_port(self) -> tuple[str, int]:
        return self.settings.redis_host_port

    def address(self) -> str:
        return self.settings.redis_url

    def prepare(self, report: Report) -> None:
        if shutil.which("redis-server") is None:
            raise ServiceError("redis: `redis-server` not found; install Debian's package "
                               "(apt-get install redis-server) or run `make services`")
        (self.settings.home / "redis").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        host, port = self.host_port()
        return ["redis-server", "--bind", host, "--port", str(port), "--dir", str(self.settings.home / "redis"),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
                "--daemonize", "no"]

    def healthy(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.settings.redis_url, socket_timeout=1,
                                         socket_connect_timeout=1).ping())


class KafkaService(LocalService):
    name = "kafka"
    start_timeout = 90.0

    @property
    def kafka_home(self) -> Path:
        return self.settings.home / "kafka"

    @property
    def libs(self) -> Path:
        return self.settings.kafka_libs

    def host_port(self) -> tuple[str, int]:
        return self.settings.kafka_host_port

    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def extra_ports(self) -> list[int]:
        return [self.settings.kafka_controller_port]

    def prepare(self, report: Report) -> None:
        if shutil.which("java") is None:
            raise ServiceError("kafka: `java` not found; the Kafka broker needs Java 17 or newer")
        self.fetch_jars(report)
        self.kafka_home.mkdir(parents=True, exist_ok=True)  # the jars may live elsewhere (TANDEM_KAFKA_LIBS)
        self._write_config()
        if not (self.kafka_home / "data" / "meta.properties").exists():
            report("kafka: formatting the KRaft log directory")
            cluster_id = new_cluster_id()
            result = subprocess.run(
                ["java", "-cp", f"{self.libs}/*", f"-Dlog4j2.configurationFile={RESOURCES / 'kafka-log4j2.yaml'}",
                 "kafka.tools.StorageTool", "format", "-t", cluster_id,
                 "-c", str(self.kafka_home / "server.properties")],
                capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(f"kafka: formatting the log directory failed:\n{result.stdout}\n{result.stderr}")

    def fetch_jars(self, report: Report) -> None:
        marker = self.libs / ".complete"
        pom = RESOURCES / "kafka-pom.xml"
        if marker.exists() and marker.read_text() == pom.read_text():
            return
        if shutil.which("mvn") is None:
            raise ServiceError("kafka: the broker jars are not cached and `mvn` is not installed to fetch them "
                               "from Maven Central")
        report("kafka: fetching the broker jars from Maven Central (once)")
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.mkdir(parents=True)
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}",
             "-DincludeScope=runtime"], capture_output=True, text=True)
        if result.returncode != 0 or not list(self.libs.glob("kafka_2.13-*.jar")):
            raise ServiceError(f"kafka: Maven could not fetch the broker jars:\n{result.stdout[-3000:]}\n"
                               f"{result.stderr[-2000:]}")
        marker.write_text(pom.read_text())

    def _write_config(self) -> None:
        host, port = self.host_port()
        template = (RESOURCES / "kafka-server.properties").read_text()
        text = template.format(host=host, port=port, controller_port=self.settings.kafka_controller_port,
                               log_dir=self.kafka_home / "data", partitions=self.settings.kafka_partitions)
        (self.kafka_home / "server.properties").write_text(text)

    def command(self) -> list[str]:
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={RESOURCES / 'kafka-log4j2.yaml'}",
                "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.kafka_home / "server.properties")]

    def healthy(self) -> bool:
        host, port = self.host_port()
        if not port_open(host, port):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    def after_start(self, report: Report) -> None:
        from tandem.topics import ensure_topics

        created = ensure_topics(self.settings)
        if created:
            report(f"kafka: created topic(s) {', '.join(created)}")


class MlflowService(LocalService):
    name = "mlflow"
    start_timeout = 120.0

    def host_port(self) -> tuple[str, int]:
        return self.settings.mlflow_host_port

    def address(self) -> str:
        return self.settings.mlflow_uri

    def prepare(self, report: Report) -> None:
        (self.settings.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        host, port = self.host_port()
        home = self.settings.home / "mlflow"
        return [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                "--artifacts-destination", str(home / "artifacts"),
                "--host", host, "--port", str(port), "--workers", "1"]

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.settings.mlflow_uri.rstrip('/')}/health", timeout=2) as resp:
            return resp.status == 200


SERVICE_TYPES: dict[str, type[LocalService]] = {"redis": RedisService, "kafka": KafkaService, "mlflow": MlflowService}


def services(settings: Settings, names: list[str] | None = None) -> list[LocalService]:
    names = names or list(SERVICE_TYPES)
    unknown = [n for n in names if n not in SERVICE_TYPES]
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; expected any of {', '.join(SERVICE_TYPES)}")
    return [SERVICE_TYPES[n](settings) for n in names]
