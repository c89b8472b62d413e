"""Docker's own names for its bridges and containers, where the host's docker answered.

``explain/owners.py`` names a Docker rule by what the ruleset says (its chain, the bridge
``br-0123456789ab``, the DNAT target ``172.18.0.2:80``). Docker knows more: which network that
bridge is and which container has that address. ``live/dockerhost.py`` asks the docker CLI
(read-only, with a time limit) and hands the answer to ``owners.use_docker_names``; without an
answer the names stay those the ruleset gives. This module holds the answer and its lookups only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DockerNames:
    """What ``docker inspect --type network`` said: bridge interface -> network, address -> container."""

    networks: dict[str, str] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)

    def network(self, bridge: str | None) -> str | None:
        return self.networks.get(bridge) if bridge else None

    def container(self, address: str | None) -> str | None:
        """The container with ``address`` (an IP, ``IP:port`` or ``[IPv6]:port``, or a ``/prefix``)."""
        if not address:
            return None
        a = address.split("/")[0]
        if a.startswith("["):
            a = a[1:].split("]")[0]
        elif a.count(":") == 1:
            a = a.split(":")[0]
        return self.containers.get(a)


def from_inspect(networks: list[Any]) -> DockerNames:
    """The names of ``docker inspect --type network`` output (a JSON list): bridge-driver networks only.

    A bridge network's interface is its ``com.docker.network.bridge.name`` option, else
    ``docker0`` for the default network (named ``bridge``), else ``br-`` and the first 12 hex
    digits of its id (Docker's own rule).
    """
    nets: dict[str, str] = {}
    ctrs: dict[str, str] = {}
    for net in networks:
        if not isinstance(net, dict) or net.get("Driver") != "bridge":
            continue
        name, nid = str(net.get("Name") or ""), str(net.get("Id") or "")
        opts = net.get("Options") or {}
        bridge = opts.get("com.docker.network.bridge.name") if isinstance(opts, dict) else None
        bridge = bridge or ("docker0" if name == "bridge" else f"br-{nid[:12]}" if nid else None)
        if bridge and name:
            nets[str(bridge)] = name
        containers = net.get("Containers") or {}
        for c in containers.values() if isinstance(containers, dict) else ():
            if not isinstance(c, dict) or not c.get("Name"):
                continue
            for key in ("IPv4Address", "IPv6Address"):
                ip = str(c.get(key) or "").split("/")[0]
                if ip:
                    ctrs[ip] = str(c["Name"]).lstrip("/")
    return DockerNames(nets, ctrs)
