"""The local services are real and usable: Redis, Kafka (KRaft) and the MLflow tracking server."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tandem.services import KafkaService, port_open


def test_redis_round_trip(settings):
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    key = f"tandem:test:{uuid.uuid4().hex}"
    client.set(key, b"\x00binary\xff", ex=60)
    assert client.get(key) == b"\x00binary\xff"
    client.delete(key)


def _consume(settings, topic, group, n, timeout_ms=20000):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=timeout_ms)
    got = []
    for record in consumer:
        got.append(record.value)
        if len(got) == n:
            break
    consumer.commit()
    consumer.close()
    return got


def _produce(settings, topic, values):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for v in values:
        producer.send(topic, key=v[:4], value=v)
    producer.flush()
    producer.close()


def test_kafka_topics_exist_after_up(settings):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    topics = set(admin.list_topics())
    admin.close()
    assert {settings.topic, settings.dlq_topic} <= topics


def test_kafka_consumer_group_resumes_from_committed_offsets_across_a_broker_restart(settings):
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()

    first = [f"a{i:03d}".encode() for i in range(30)]
    _produce(settings, topic, first)
    assert sorted(_consume(settings, topic, group, 30)) == sorted(first)

    broker = KafkaService(settings)
    broker.down()
    assert not port_open(*settings.kafka_host_port)
    broker.up()

    second = [f"b{i:03d}".encode() for i in range(20)]
    _produce(settings, topic, second)
    # the group picks up exactly where its committed offsets left it: only the new records
    assert sorted(_consume(settings, topic, group, 20)) == sorted(second)
    assert _consume(settings, topic, group, 1, timeout_ms=3000) == []


def test_mlflow_logs_a_run_and_registers_a_model_version(settings, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_uri)
    name = f"test-model-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment("tandem-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("auc", 0.75)
        artifact = tmp_path / "note.txt"
        artifact.write_text("hello")
        mlflow.log_artifact(str(artifact))
    client = MlflowClient(settings.mlflow_uri)
    assert client.get_run(run.info.run_id).data.metrics["auc"] == 0.75
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/note.txt", run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt",
                                                dst_path=str(tmp_path / "dl"))
    assert Path(local).read_text() == "hello"


@pytest.mark.slow
def test_services_cli_up_status_down_on_other_ports(tmp_path):
    """A second, isolated set of services: up is idempotent, status shows all three, down leaves nothing."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TANDEM_HOME": str(tmp_path / "home"),
           "TANDEM_REDIS_URL": "redis://127.0.0.1:16379/0", "TANDEM_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
           "TANDEM_KAFKA_CONTROLLER_PORT": "19093", "MLFLOW_TRACKING_URI": "http://127.0.0.1:15000"}

    def tandem(*args):
        return subprocess.run([sys.executable, "-m", "tandem", *args], env=env, cwd=root,
                              capture_output=True, text=True, timeout=300)

    try:
        up = tandem("services", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        again = tandem("services", "up")
        assert again.returncode == 0 and "already running" in again.stdout
        status = tandem("services", "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 3
        pids = [int(p.read_text()) for p in (tmp_path / "home" / "run").glob("*.pid")]
        assert len(pids) == 3
    finally:
        down = tandem("services", "down")
    assert down.returncode == 0, down.stderr
    for port in (16379, 19092, 19093, 15000):
        assert not port_open("127.0.0.1", port)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    status = tandem("services", "status")
    assert status.returncode == 1 and status.stdout.count("stopped") == 3


def test_up_names_a_taken_port(tmp_path):
    import socket

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = {**os.environ, "TANDEM_HOME": str(tmp_path), "TANDEM_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        result = subprocess.run([sys.executable, "-m", "tandem", "services", "up", "redis"], env=env, cwd=root,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken by another process" in result.stderr
