import pytest

from tandem.settings import Settings, SettingsError, is_loopback


def test_addresses_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TANDEM_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example")
    s = Settings()
    assert s.redis_host_port == ("cache.internal", 6380)
    assert s.kafka_host_port == ("k1", 9092)
    assert s.mlflow_host_port == ("mlflow.example", 443)
    assert not is_loopback(s.redis_host_port[0])


def test_bad_settings_say_what_was_expected(monkeypatch):
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", "nohostport")
    with pytest.raises(SettingsError, match="expected host:port"):
        _ = Settings().kafka_host_port
    monkeypatch.setenv("TANDEM_SERVE_PORT", "three thousand")
    with pytest.raises(SettingsError, match="TANDEM_SERVE_PORT='three thousand' is not an integer"):
        Settings()


def test_kraft_cluster_ids_never_start_with_a_dash(monkeypatch):
    import uuid

    from tandem.services import new_cluster_id

    # 0xF8... encodes to "-" first in URL-safe base64: the first draw must be rejected
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    cluster_id = new_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
