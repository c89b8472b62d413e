"""The terminal tree: exact text for the seed 003 packets, width handling, sanitizing untrusted text."""

from __future__ import annotations

import io

import pytest
from render_cases import build, render, seed003_drop, seed003_port80, unknown_fate
from rich.cells import cell_len
from rich.console import Console

from ruletrace.model import CauseLink, Change, Explanation, Fate, Verdict
from ruletrace.render.theme import THEME, clean
from ruletrace.render.tree import render_explanations, to_renderable


def _pad(prefix: str, head: str) -> str:
    """The continuation prefix of a step: tree guides, then as many spaces as the head plus the gap."""
    return prefix + " " * (len(head) + 2)


# What a reader should see for the SYN to NodePort 52000 (seed 003), written out by hand:
# hooks in kernel order, each jump nesting the called chain, returns naming where they go,
# the mark set in nat:KUBE-MARK-DROP and the drop in filter:KUBE-FIREWALL called out.
DROP_52000_TEXT = "\n".join(
    [
        "packet 1  TCP 172.28.129.2:55694 -> 172.28.129.4:52000 [SYN]  in eth0",
        # the owner: the nearest cause link that names a service (explain/owners.py)
        "DROPPED by filter:KUBE-FIREWALL rule 1 [kubernetes ootob9/ingress-nginx:http]: mark 0x8000/0x8000",
        "matched",
        "├── PREROUTING  raw -> mangle -> nat",
        "│   ├── raw:PREROUTING policy 3  ACCEPT",
        '│   ├── mangle:PREROUTING rule 1  -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING',
        '│   │   ├── mangle:cali-PREROUTING rule 3  -m comment --comment "cali:wNH7KsA3ILKJBsY9" -j',
        _pad("│   │   │   ", "mangle:cali-PREROUTING rule 3") + "cali-from-host-endpoint",
        "│   │   │   └── mangle:cali-from-host-endpoint return 1  -> cali-PREROUTING",
        "│   │   └── mangle:cali-PREROUTING return 5  -> PREROUTING",
        "│   ├── mangle:PREROUTING policy 2  ACCEPT",
        '│   ├── nat:PREROUTING rule 1  -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING',
        '│   │   ├── nat:cali-PREROUTING rule 1  -m comment --comment "cali:r6XmIziWUJsdOK6Z" -j',
        _pad("│   │   │   ", "nat:cali-PREROUTING rule 1") + "cali-fip-dnat",
        "│   │   │   └── nat:cali-fip-dnat return 1  -> cali-PREROUTING",
        "│   │   └── nat:cali-PREROUTING return 2  -> PREROUTING",
        '│   ├── nat:PREROUTING rule 2  -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '│   │   ├── nat:KUBE-SERVICES rule 59  -m comment --comment "kubernetes service nodeports; NOTE:',
        _pad("│   │   │   ", "nat:KUBE-SERVICES rule 59") + 'this must be the last rule in this chain" -m addrtype',
        _pad("│   │   │   ", "nat:KUBE-SERVICES rule 59") + "--dst-type LOCAL -j KUBE-NODEPORTS",
        '│   │   │   ├── nat:KUBE-NODEPORTS rule 16  -p tcp -m comment --comment "ootob9/ingress-nginx:http"',
        _pad("│   │   │   │   ", "nat:KUBE-NODEPORTS rule 16") + "-m tcp --dport 52000 -j KUBE-XLB-VETHOZVMBYUVK3NB",
        _pad("│   │   │   │   ", "nat:KUBE-NODEPORTS rule 16") + "<- cause: called from",
        "│   │   │   │   ├── nat:KUBE-XLB-VETHOZVMBYUVK3NB rule 4  -m comment --comment",
        _pad("│   │   │   │   │   ", "nat:KUBE-XLB-VETHOZVMBYUVK3NB rule 4") + '"ootob9/ingress-nginx:http has no local',
        _pad("│   │   │   │   │   ", "nat:KUBE-XLB-VETHOZVMBYUVK3NB rule 4") + 'endpoints" -j KUBE-MARK-DROP',
        _pad("│   │   │   │   │   ", "nat:KUBE-XLB-VETHOZVMBYUVK3NB rule 4") + "<- cause: called from",
        "│   │   │   │   │   ├── nat:KUBE-MARK-DROP rule 1  -j MARK --set-xmark 0x8000/0x8000",
        _pad("│   │   │   │   │   │   ", "nat:KUBE-MARK-DROP rule 1") + "MARK (none) -> 0x8000",
        _pad("│   │   │   │   │   │   ", "nat:KUBE-MARK-DROP rule 1") + "<- cause: mark set",
        "│   │   │   │   │   └── nat:KUBE-MARK-DROP return 2  -> KUBE-XLB-VETHOZVMBYUVK3NB",
        "│   │   │   │   └── nat:KUBE-XLB-VETHOZVMBYUVK3NB return 5  -> KUBE-NODEPORTS",
        "│   │   │   └── nat:KUBE-NODEPORTS return 37  -> KUBE-SERVICES",
        "│   │   └── nat:KUBE-SERVICES return 60  -> PREROUTING",
        "│   ├── nat:PREROUTING rule 5  -m addrtype --dst-type LOCAL -j DOCKER",
        "│   │   └── nat:DOCKER return 8  -> PREROUTING",
        "│   └── nat:PREROUTING policy 9  ACCEPT",
        "└── INPUT  mangle -> filter",
        "    ├── mangle:INPUT policy 1  ACCEPT",
        "    └── filter:INPUT rule 1  -j KUBE-FIREWALL",
        '        └── filter:KUBE-FIREWALL rule 1  -m comment --comment "kubernetes firewall for dropping',
        _pad("            ", "filter:KUBE-FIREWALL rule 1") + 'marked packets" -m mark --mark 0x8000/0x8000 -j DROP',
        _pad("            ", "filter:KUBE-FIREWALL rule 1") + "=> DROP",
        "mark     MARK (none) -> 0x8000 at nat:KUBE-MARK-DROP rule 1",
        "why      decided      filter:KUBE-FIREWALL rule 1: drops packets that carry mark 0x8000/0x8000",
        "         mark set     nat:KUBE-MARK-DROP rule 1: set mark 0x8000/0x8000",
        "         called from  nat:KUBE-XLB-VETHOZVMBYUVK3NB rule 4: ootob9/ingress-nginx:http has no local",
        " " * 22 + "endpoints",
        "         called from  nat:KUBE-NODEPORTS rule 16: ootob9/ingress-nginx:http, dport 52000",
        "",
    ]
)

PORT80_TEXT = "\n".join(
    [
        "packet 2  TCP 172.28.129.2:42182 -> 172.28.129.4:80 [SYN]  in eth0",
        "DELIVERED by filter:INPUT policy ACCEPT: no filter rule dropped it",
        "├── PREROUTING  raw -> nat",
        "│   ├── raw:PREROUTING policy 4  ACCEPT",
        "│   └── nat:PREROUTING rule 3  -d 172.28.129.4/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination",
        _pad("│       ", "nat:PREROUTING rule 3") + "172.28.129.4:52000",
        _pad("│       ", "nat:PREROUTING rule 3") + "DST 172.28.129.4:80 -> 172.28.129.4:52000",
        "└── INPUT  mangle -> filter -> nat",
        "    ├── mangle:INPUT policy 1  ACCEPT",
        "    ├── filter:INPUT rule 1  -j KUBE-FIREWALL",
        "    │   └── filter:KUBE-FIREWALL return 3  -> INPUT",
        _pad("    │       ", "filter:KUBE-FIREWALL return 3") + "! filter:KUBE-FIREWALL has 1 rule in the ruleset",
        "    ├── filter:INPUT policy 2  ACCEPT",
        _pad("    │   ", "filter:INPUT policy 2") + "=> ACCEPT",
        "    └── nat:INPUT policy 1  ACCEPT",
        "nat      DST 172.28.129.4:80 -> 172.28.129.4:52000 at nat:PREROUTING rule 3",
        "warning  ruleset looks older than the log",
        "note     only the first packet of a connection goes through nat",
        "",
    ]
)


def test_seed003_drop_exact() -> None:
    assert render(to_renderable(seed003_drop())) == DROP_52000_TEXT


def test_seed003_port80_nat_warning_note_exact() -> None:
    assert render(to_renderable(seed003_port80())) == PORT80_TEXT


def test_unknown_fate_names_last_place_seen() -> None:
    out = render(to_renderable(unknown_fate()))
    assert out.splitlines()[:4] == [
        "packet 3  UDP 10.0.0.5:5353 -> 8.8.8.8:53  out eth1",
        "UNKNOWN: the trace ends at nat:POSTROUTING",
        "└── POSTROUTING  nat",
        "    └── nat:POSTROUTING rule 1  -s 10.0.0.0/24 -j MASQUERADE",
    ]


def test_render_explanations_streams_with_blank_line_between() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None, force_terminal=False)
    n = render_explanations(iter([seed003_drop(), seed003_port80()]), console)
    assert n == 2
    assert buf.getvalue() == DROP_52000_TEXT + "\n" + PORT80_TEXT


@pytest.mark.parametrize("width", [100, 80, 60, 40, 24])
def test_every_line_fits_the_width(width: int) -> None:
    for expl in (seed003_drop(), seed003_port80(), unknown_fate()):
        out = render(to_renderable(expl, verbose=True), width=width)
        too_wide = [line for line in out.splitlines() if cell_len(line) > width]
        assert too_wide == []


def test_narrow_60_keeps_every_word_of_the_rule() -> None:
    out = render(to_renderable(seed003_drop()), width=60)
    words = " ".join(out.split())
    # nothing is cut: the long kube-proxy comment arrives whole, word by word
    for word in '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'.split():
        assert word in words
    assert "KUBE-XLB-VETHOZVMBYUVK3NB" in out.replace("\n", "").replace(" ", "").replace("│", "")


def test_narrow_puts_text_under_a_deep_head() -> None:
    # at 60 columns the KUBE-MARK-DROP step (5 levels deep) has no room beside its head
    lines = render(to_renderable(seed003_drop()), width=60).splitlines()
    i = next(n for n, line in enumerate(lines) if "nat:KUBE-MARK-DROP rule 1" in line)
    assert lines[i].endswith("nat:KUBE-MARK-DROP rule 1")
    assert lines[i + 1].endswith("  -j MARK --set-xmark 0x8000/0x8000")


HOSTILE = '"\x1b[31mred [bold]x\x07"'


def _hostile() -> Explanation:
    rows = [
        ("filter:INPUT:rule:1", 0, f"-A INPUT -m comment --comment {HOSTILE} -j DROP", "drop", {}),
    ]
    fields = {"IN": "eth0\x1b]0;pwned\x07", "SRC": "10.0.0.1", "DST": "10.0.0.2", "PROTO": "ICMP", "TYPE": "8"}
    packet, steps = build("evil\x1b[2J.log", rows, fields, 7)
    steps[0].note = "note \x1b[5m[blink]"
    rule = steps[0].rule
    return Explanation(
        packet,
        steps=steps,
        fate=Fate.DROPPED,
        verdict=Verdict("drop", "filter", "INPUT", 1, rule, "comment \x1b[31m[red]"),
        marks=[Change("MARK", "0x1\x1b[0m", "0x2", "filter", "INPUT", 1, rule, step=0)],
        cause=[CauseLink("decided\u202e", "filter", "INPUT", 1, rule, "because [bold]\x9b31m", 0)],
        warnings=["\x1b[H[link=file:///etc/passwd]x[/link]"],
        notes=["\r\nline"],
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_untrusted_text_cannot_reach_the_terminal(verbose: bool) -> None:
    out = render(to_renderable(_hostile(), verbose=verbose))
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "\r" not in out
    assert r'--comment "\x1b[31mred [bold]x\x07" -j DROP' in out  # shown escaped, [bold] kept literally
    assert r"in eth0\x1b]0;pwned\x07" in out
    assert r"because [bold]\x9b31m" in out
    assert r"decided\u202e" in out
    assert r"\x1b[H[link=file:///etc/passwd]x[/link]" in out
    assert r"\r\nline" in out


def test_untrusted_text_on_a_colour_terminal_only_carries_our_styles() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system="truecolor", force_terminal=True)
    render_explanations([_hostile()], console)
    out = buf.getvalue()
    assert r"\x1b[31mred [bold]x\x07" in out
    # every escape sequence is rich's own SGR styling: ESC [ digits/semicolons m
    import re

    assert re.sub(r"\x1b\[[0-9;]*m", "", out).count("\x1b") == 0
    assert "\x07" not in out


def test_clean_escapes_control_and_format_characters() -> None:
    assert clean("a\x1b[31mb") == r"a\x1b[31mb"
    assert clean("tab\there") == "tab here"
    assert clean("rtl\u202eoverride") == r"rtl\u202eoverride"
    assert clean("ünïcode ok [bold]") == "ünïcode ok [bold]"
    assert clean(42) == "42"


def test_policy_colours_come_from_the_theme() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system="standard", force_terminal=True)
    render_explanations([seed003_drop()], console)
    plain = Console(file=io.StringIO(), width=100, color_system="standard", force_terminal=True)
    # the same renderable without the theme pushed renders no colour at all
    with plain.capture() as cap:
        plain.print(to_renderable(seed003_drop()))
    assert "\x1b[" in buf.getvalue()
    assert "\x1b[" not in cap.get()
    assert THEME.styles["fate.dropped"].color is not None


def test_sentences_that_repeat_the_place_are_not_doubled() -> None:
    # explainers tend to write "dropped by filter:X rule 1 …": the header already names the place
    e = seed003_drop()
    e.verdict.reason = "dropped by filter:KUBE-FIREWALL rule 1 because of mark 0x8000"
    e.cause[1].text = "mark 0x8000 set by nat:KUBE-MARK-DROP rule 1"
    lines = render(to_renderable(e)).splitlines()
    assert lines[1] == "DROPPED by filter:KUBE-FIREWALL rule 1 [kubernetes ootob9/ingress-nginx:http] because of mark 0x8000"
    assert "         mark set     mark 0x8000 set by nat:KUBE-MARK-DROP rule 1" in lines

    e = seed003_port80()
    e.verdict = Verdict("drop", "filter", "INPUT", 2, None, "dropped by the DROP policy of filter:INPUT")
    e.steps[5].policy = "DROP"
    assert render(to_renderable(e)).splitlines()[1] == "DELIVERED by filter:INPUT policy DROP"

    e.verdict.reason = "nothing in the filter table matched, so the DROP policy of filter:INPUT applied"
    assert render(to_renderable(e)).splitlines()[1] == (
        "DELIVERED by filter:INPUT policy DROP: nothing in the filter table matched, so the DROP policy of"
    )


@pytest.mark.parametrize("width", [40, 60, 100])
def test_deep_call_chains_stop_indenting_but_lose_no_step(width: int) -> None:
    rows = [("filter:INPUT:rule:1", 0, "-A INPUT -j C1", "jump", {})]
    rows += [(f"filter:C{i}:rule:1", i, f"-A C{i} -j C{i + 1}", "jump", {}) for i in range(1, 20)]
    rows += [("filter:C20:return:1", 20, "C19", "return", {})]
    packet, steps = build("x", rows, {"SRC": "10.0.0.1", "DST": "10.0.0.2"}, 5)
    out = render(to_renderable(Explanation(packet, steps=steps)), width=width)
    flat = " ".join(out.split())
    for i in range(1, 20):
        assert f"filter:C{i} rule 1" in flat
    assert "(depth 20) filter:C20 return 1 -> C19" in flat
    assert all(cell_len(line) <= width for line in out.splitlines())


def test_theme_has_the_documented_style_names() -> None:
    names = (
        "step.rule step.policy step.return step.decisive verdict.accept verdict.drop verdict.reject "
        "verdict.unknown chain table hook rule.num rule.text nat mark cause warning note origin packet.id "
        "fate.dropped fate.rejected fate.delivered fate.forwarded fate.sent fate.unknown"
    ).split()
    assert [n for n in names if n not in THEME.styles] == []


def test_ascii_console_gets_ascii_guides() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    console = Console(file=stream, width=100, color_system=None, force_terminal=False)
    render_explanations([seed003_port80()], console)
    stream.flush()
    lines = raw.getvalue().decode("ascii").splitlines()
    assert lines[2:5] == [
        "+-- PREROUTING  raw -> nat",
        "|   +-- raw:PREROUTING policy 4  ACCEPT",
        "|   `-- nat:PREROUTING rule 3  -d 172.28.129.4/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination",
    ]


def test_verbose_adds_fields_changes_and_origins() -> None:
    lines = render(to_renderable(seed003_port80(), verbose=True)).splitlines()
    assert lines[2].startswith("IN=eth0 OUT= MAC=00:15:5d:12:e2:28:00:15:5d:12:e2:24:08:00 SRC=172.28.129.2 ")
    assert "first seen at messages:1" in lines
    i = lines.index("    ├── mangle:INPUT policy 1  ACCEPT")
    assert lines[i + 1 : i + 3] == [
        _pad("    │   ", "mangle:INPUT policy 1") + "fields: DPT=52000",  # the DNAT shows in the fields
        _pad("    │   ", "mangle:INPUT policy 1") + "at messages:3",
    ]
    assert all("fields:" not in line for line in render(to_renderable(seed003_port80())).splitlines())
