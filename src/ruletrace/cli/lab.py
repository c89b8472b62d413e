"""``ruletrace lab``: record scenarios against the real kernel in network namespaces."""

from __future__ import annotations

import signal
from pathlib import Path

import click


def _sigterm(signum, frame):  # SIGTERM tears down like Ctrl-C (the Lab context managers run)
    raise KeyboardInterrupt


@click.group(hidden=True)  # a developer's tool: out of the main help, still `ruletrace lab --help`
def lab() -> None:
    """Kernel lab (for ruletrace's developers): network-namespace test hosts, real TRACE captures (root only)."""


@lab.command("list")
def list_() -> None:
    """List the scenarios."""
    from ..lab.scenarios import SCENARIOS
    from ..lab.scenarios_nft import SCENARIOS as NATIVE

    for s in SCENARIOS.values():
        click.echo(f"{s.name:18} {s.title}")
    for n in NATIVE.values():
        click.echo(f"{n.name:18} nftables: {n.title}")


@lab.command()
@click.argument("scenario")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["legacy", "nft", "both"]), default="both", show_default=True,
              help="iptables backend to load the ruleset with.")
@click.option("--example", is_flag=True,
              help="Also write example.json and keep the folder under 200 KB (for src/ruletrace/examples).")
def record(scenario: str, directory: Path, backend: str, example: bool) -> None:
    """Record SCENARIO's ruleset, every capture format and the observed outcome into DIRECTORY."""
    from ..lab import record as rec
    from ..lab.scenarios import get
    from ..lab.scenarios_nft import SCENARIOS as NATIVE

    old = signal.signal(signal.SIGTERM, _sigterm)
    try:  # restored after: an in-process caller (the tests) must not keep this handler
        if scenario in NATIVE:
            if example:
                raise click.UsageError("--example is for the iptables scenarios only")
            from ..lab.record_nft import record as record_native

            out = record_native(NATIVE[scenario], directory)
            for f in out["flows"]:
                click.echo(f"{f['name']:14} {f['result']:12} {f['via']}")
            click.echo(f"wrote {directory}")
            return
        sc = get(scenario)
        backends = ("legacy", "nft") if backend == "both" else (backend,)
        r = rec.record(sc, directory, backends, log=lambda s: click.echo(s, err=True))
        if example:
            meta = rec.write_example(sc, directory)
            for name in meta["omitted"]:
                click.echo(f"left out {name} (size budget)", err=True)
        for f in r.flows:
            arrived = {True: "arrived", False: "did not arrive", None: "passes disagree"}[f["arrived"]]
            click.echo(f"{f['name']:12} {arrived:15} {f['description']}")
        click.echo(f"wrote {directory}")
    finally:
        signal.signal(signal.SIGTERM, old)


@lab.command()
@click.option("--force", is_flag=True, help="Also remove namespaces of runs that are still alive.")
def sweep(force: bool) -> None:
    """Remove namespaces, interfaces and state left behind by killed lab runs (prefix rtl)."""
    from ..lab.netns import sweep as do_sweep

    removed = do_sweep(force=force)
    for r in removed:
        click.echo(f"removed {r}")
    if not removed:
        click.echo("nothing to remove")
