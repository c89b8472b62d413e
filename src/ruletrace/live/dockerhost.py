"""Ask the host's docker for the names of its networks and containers (read-only, time-limited).

Only when a ``docker`` binary is on PATH and answers within ``TIMEOUT`` seconds per call:
``docker network ls --no-trunc --quiet`` (the network ids), then ``docker inspect --type network``
of those ids. Nothing is changed; any failure (no binary, no daemon, a timeout, output that is
not the expected JSON) leaves the names the ruleset gives (explain/owners.py), and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from ..explain.docker_names import DockerNames, from_inspect

TIMEOUT = 2.0  # seconds per docker call


def read(docker: str = "docker", timeout: float = TIMEOUT) -> tuple[DockerNames | None, str]:
    """(the names, "") when docker answered; (None, why not) otherwise."""
    exe = shutil.which(docker)
    if exe is None:
        return None, "no docker binary on PATH: Docker rules are named from their chains and bridges"
    ids, why = _run([exe, "network", "ls", "--no-trunc", "--quiet"], timeout)
    if ids is None:
        return None, why
    wanted = ids.split()
    if not wanted:
        return DockerNames(), ""
    out, why = _run([exe, "inspect", "--type", "network", *wanted], timeout)
    if out is None:
        return None, why
    try:
        data = json.loads(out)
    except ValueError:
        return None, "docker inspect did not print JSON: Docker rules are named from their chains and bridges"
    if not isinstance(data, list):
        return None, "docker inspect printed no list of networks: Docker rules are named from their chains and bridges"
    return from_inspect(data), ""


def _run(argv: list[str], timeout: float) -> tuple[str | None, str]:
    what = " ".join(argv[1:3])
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"docker {what} did not answer within {timeout:g} s: Docker rules are named from their chains"
    except OSError as e:
        return None, f"docker {what}: {e.strerror or e}: Docker rules are named from their chains"
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return None, f"docker {what} failed ({err}): Docker rules are named from their chains"
    return p.stdout, ""
