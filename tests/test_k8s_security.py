"""The security properties of the Kubernetes manifests (issue 18): pinned images, the Ray dashboard off 0.0.0.0, an
Elasticsearch user with a least-privilege role instead of `elastic`, TLS with ECK's CA mounted and named by
SIFT_ELASTICSEARCH_CA_CERTS; and that setting reaching the Elasticsearch client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parent.parent / "k8s"
HARDENED = ["elasticsearch.yaml", "rayservice.yaml", "rayjob-train-lm.yaml"]
CA_SECRET = "sift-es-http-certs-public"  # ECK: <cluster name>-es-http-certs-public


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def all_docs() -> list[dict[str, Any]]:
    return [d for name in HARDENED for d in docs(name)]


def walk(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under `key` anywhere in a parsed manifest."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def pod_specs() -> Iterator[dict[str, Any]]:
    for doc in all_docs():
        for template in walk(doc, "template"):
            if isinstance(template, dict) and "containers" in template.get("spec", {}):
                yield template["spec"]


def test_every_image_is_pinned_to_a_version() -> None:
    images = [c["image"] for spec in pod_specs() for c in spec["containers"] + spec.get("initContainers", [])]
    assert len(images) >= 4
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image


def test_the_ray_dashboard_listens_on_loopback_only() -> None:
    heads = [
        d["spec"].get("rayClusterConfig", d["spec"].get("rayClusterSpec")) for d in all_docs() if "Ray" in d["kind"]
    ]
    assert len(heads) == 2
    for cluster in heads:
        host = cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host")
        assert host == "127.0.0.1"
    assert not any(v == "0.0.0.0" for d in all_docs() for v in walk(d, "dashboard-host"))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_no_elastic_superuser_and_the_ca_is_mounted_wherever_elasticsearch_is_used() -> None:
    users = set()
    for spec in pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            env = _env(c)
            if "SIFT_ELASTICSEARCH_PASSWORD" not in env:
                continue
            user, password = env["SIFT_ELASTICSEARCH_USERNAME"], env["SIFT_ELASTICSEARCH_PASSWORD"]
            assert user != "elastic" and isinstance(user, dict), "the username comes from the user's Secret"
            secret = user["secretKeyRef"]["name"]
            assert password["secretKeyRef"]["name"] == secret and "elastic-user" not in secret
            users.add(secret)
            ca = Path(env["SIFT_ELASTICSEARCH_CA_CERTS"])
            mount = next(m for m in c["volumeMounts"] if ca.parent == Path(m["mountPath"]))
            assert volumes[mount["name"]]["secret"]["secretName"] == CA_SECRET
    assert users == {"sift-app-user", "sift-trainer-user"}
    for doc in all_docs():
        for url in walk(doc, "ELASTICSEARCH_URL"):
            assert url.startswith("https://"), url
    assert not any("sift-es-elastic-user" in yaml.safe_dump(d) for d in all_docs())


def test_the_cluster_knows_the_users_and_the_app_role_only_reads_what_it_serves() -> None:
    es = next(d for d in all_docs() if d["kind"] == "Elasticsearch")
    realm = {s["secretName"] for s in es["spec"]["auth"]["fileRealm"]}
    assert {"sift-app-user", "sift-trainer-user"} <= realm
    (roles_ref,) = es["spec"]["auth"]["roles"]
    secret = next(d for d in all_docs() if d["kind"] == "Secret" and d["metadata"]["name"] == roles_ref["secretName"])
    roles = yaml.safe_load(secret["stringData"]["roles.yml"])
    app = {tuple(p["names"]): set(p["privileges"]) for p in roles["sift_app"]["indices"]}
    served = next(names for names in app if "docs" in names)
    assert app[served] <= {"read", "view_index_metadata"}  # no write, delete or manage on what it searches
    logs = next(names for names in app if "sift-querylog" in names)
    assert "sift-clicklog" in logs and "write" in app[logs]
    assert set(roles["sift_app"]["cluster"]) <= {"monitor"}
    trainer = {p for grant in roles["sift_trainer"]["indices"] for p in grant["privileges"]}
    assert trainer <= {"read", "view_index_metadata"}


def test_the_ca_setting_reaches_the_elasticsearch_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import certifi

    from search.settings import Settings
    from search.stores.factory import make_store

    ca = tmp_path / "ca.crt"
    ca.write_text(Path(certifi.where()).read_text())  # any valid PEM bundle: the client loads it
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://sift-es-http:9200")
    for var in ("ELASTICSEARCH_CA_CERTS", "SIFT_ELASTICSEARCH_CA_CERTS"):
        monkeypatch.setenv(var, str(ca))
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.elasticsearch_ca_certs == ca
        store = make_store("es", settings)
        try:
            (node,) = store.client.transport.node_pool.all()  # type: ignore[attr-defined]
            assert node.config.ca_certs == str(ca) and node.config.scheme == "https"
        finally:
            store.close()
        monkeypatch.delenv(var)
    plain = make_store("es", Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        (node,) = plain.client.transport.node_pool.all()  # type: ignore[attr-defined]
        assert node.config.ca_certs is None
    finally:
        plain.close()
