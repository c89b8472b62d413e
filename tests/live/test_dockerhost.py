"""Docker names from a fake docker binary on PATH (live/dockerhost.py, explain/docker_names.py, owners)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from ruletrace.explain import owners
from ruletrace.live import dockerhost
from ruletrace.model import Rule

NETWORKS = [
    {"Name": "bridge", "Id": "f" * 64, "Driver": "bridge", "Options": {"com.docker.network.bridge.name": "docker0"},
     "Containers": {"c1": {"Name": "web", "IPv4Address": "172.17.0.2/16", "IPv6Address": ""}}},
    {"Name": "shop_backend", "Id": "0123456789ab" + "c" * 52, "Driver": "bridge", "Options": {},
     "Containers": {"c2": {"Name": "db", "IPv4Address": "172.18.0.3/16", "IPv6Address": "fd00:18::3/64"}}},
    {"Name": "host", "Id": "d" * 64, "Driver": "host", "Options": {}, "Containers": {}},
]


def fake_docker(tmp_path, monkeypatch, script: str) -> list[str]:
    """A `docker` on PATH running ``script`` (sh); returns the file its arguments are logged to."""
    log = tmp_path / "calls"
    exe = tmp_path / "bin" / "docker"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{script}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")  # found first
    return log


@pytest.fixture(autouse=True)
def _no_names():
    yield
    owners.use_docker_names(None)


def answering(tmp_path, monkeypatch):
    ids = "\n".join(n["Id"] for n in NETWORKS)
    (tmp_path / "inspect.json").write_text(json.dumps(NETWORKS))
    return fake_docker(tmp_path, monkeypatch, f'case "$1" in network) printf "%s\\n" "{ids}";; '
                       f'inspect) {shutil.which("cat")} {tmp_path / "inspect.json"};; *) exit 3;; esac')


def published() -> Rule:
    return Rule("nat", "DOCKER", 1, "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT "
                "--to-destination 172.17.0.2:80", target="DNAT")


def test_names_from_a_docker_that_answers(tmp_path, monkeypatch):
    log = answering(tmp_path, monkeypatch)
    names, why = dockerhost.read()
    assert why == "" and names.networks == {"docker0": "bridge", "br-0123456789ab": "shop_backend"}
    assert names.containers == {"172.17.0.2": "web", "172.18.0.3": "db", "fd00:18::3": "db"}
    calls = log.read_text().splitlines()
    assert calls[0] == "network ls --no-trunc --quiet" and calls[1].startswith("inspect --type network ")
    assert len(calls) == 2  # read-only: nothing else asked
    owners.use_docker_names(names)
    o = owners.rule_owner(published())
    assert o == owners.Owner("docker", "network bridge", "published port 8080/tcp -> 172.17.0.2:80 (container web)",
                             "bridge docker0, docker inspect")
    fwd = Rule("filter", "FORWARD", 3, "-A FORWARD -o br-0123456789ab -j ACCEPT", target="ACCEPT")
    assert owners.rule_owner(fwd).name == "network shop_backend" and owners.rule_owner(fwd).matches("shop_backend")
    unknown = Rule("filter", "FORWARD", 4, "-A FORWARD -o br-fedcba987654 -j ACCEPT", target="ACCEPT")
    assert owners.rule_owner(unknown).name == "br-fedcba987654"  # a bridge docker did not name: as before


def test_without_docker_the_names_come_from_the_ruleset(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    names, why = dockerhost.read()
    assert names is None and "no docker binary" in why
    owners.use_docker_names(names)
    o = owners.rule_owner(published())
    assert (o.name, o.detail, o.evidence) == ("docker0", "published port 8080/tcp -> 172.17.0.2:80", "bridge docker0")


@pytest.mark.parametrize("script, words", [
    ('echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1',
     "failed (Cannot connect to the Docker daemon"),
    ('case "$1" in network) echo abc;; inspect) echo "not json";; esac', "did not print JSON"),
    ('case "$1" in network) echo abc;; inspect) echo "{}";; esac', "no list of networks"),
])
def test_a_docker_that_fails_leaves_the_ruleset_names(tmp_path, monkeypatch, script, words):
    fake_docker(tmp_path, monkeypatch, script)
    names, why = dockerhost.read()
    assert names is None and words in why


def test_a_docker_that_hangs_is_given_up(tmp_path, monkeypatch):
    fake_docker(tmp_path, monkeypatch, f"exec {shutil.which('sleep')} 10")
    names, why = dockerhost.read(timeout=0.3)
    assert names is None and "did not answer within 0.3 s" in why


def test_no_networks_is_an_empty_answer(tmp_path, monkeypatch):
    log = fake_docker(tmp_path, monkeypatch, "true")
    names, why = dockerhost.read()
    assert (names.networks, names.containers, why) == ({}, {}, "")
    assert os.path.exists(log) and len(log.read_text().splitlines()) == 1
