"""bench/gen_kube.py small mode: the ruleset is what the kernel accepts, the TRACE lines fit the ruleset.

The checks here re-derive everything from the two generated files (a small iptables-save reader and
a walker that follows ip_tables.c's traversal rules); they do not use the generator's own tables.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SERVICES, PACKETS, SEED = 60, 400, 7


def _load_gen():
    spec = importlib.util.spec_from_file_location("gen_kube", BENCH / "gen_kube.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_kube"] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kube")
    args = ["--services", str(SERVICES), "--packets", str(PACKETS), "--seed", str(SEED), "--out", str(out)]
    assert gen.main(args) == 0
    return out


# ---- an independent reader of the generated files ------------------------------------------------

BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


def read_rules(path: Path) -> dict[str, dict[str, list[list[str]]]]:
    """table -> chain -> rules (each the argument list after ``-A CHAIN``)."""
    tables: dict[str, dict[str, list[list[str]]]] = {}
    cur: dict[str, list[list[str]]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            cur[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            args = shlex.split(line)
            cur[args[1]].append(args[2:])
    return tables


def target(args: list[str]) -> tuple[str | None, list[str]]:
    if "-j" not in args:
        return None, []
    i = len(args) - 1 - args[::-1].index("-j")
    return args[i + 1], args[i + 2 :]


LINE = re.compile(
    r"^(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) kernel: \[\s*(\d+)\.(\d{6})\] "
    r"TRACE: (\w+):(\S+):(rule|return|policy):(\d+) (.*)$"
)


def read_log(path: Path) -> list[tuple[int, str, str, str, int, dict[str, str]]]:
    """(uptime in µs, table, chain, kind, num, fields) per line; every line must be a TRACE line."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = LINE.match(line)
        assert m, f"line {n} is not a syslog TRACE line: {line!r}"
        rest = m.group(9)
        opt = rest.index(" OPT (")
        close = rest.index(")", opt)
        words = (rest[:opt] + rest[close + 1 :]).split()
        fields = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in words)
        fields["OPT"] = rest[opt + 6 : close]
        us = int(m.group(3)) * 1_000_000 + int(m.group(4))
        out.append((us, m.group(5), m.group(6), m.group(7), int(m.group(8)), fields))
    return out


# ---- a walker following net/ipv4/netfilter/ip_tables.c ----------------------------------------

TERMINAL = {"ACCEPT", "DROP", "REJECT", "DNAT", "MASQUERADE"}  # end the table's traversal
CONTINUE = {"MARK", "TRACE", "LOG"}  # XT_CONTINUE: the next rule of the same chain runs
# hook order per path (model.HOOK_TABLES restricted to the tables the generator writes)
FORWARD_PATH = ["raw:PREROUTING", "mangle:PREROUTING", "nat:PREROUTING", "mangle:FORWARD", "filter:FORWARD",
                "mangle:POSTROUTING", "nat:POSTROUTING"]
INPUT_PATH = ["raw:PREROUTING", "mangle:PREROUTING", "nat:PREROUTING", "mangle:INPUT", "filter:INPUT",
              "nat:INPUT"]


CHANGING = {"DST", "DPT", "OUT", "TTL", "MARK"}  # DNAT, routing, forwarding and MARK change these


def matches(args: list[str], f: dict[str, str], mark: int) -> bool | None:
    """Whether a rule matches the packet: True / False, None when it depends on state we cannot see."""
    unknown = False
    i, neg = 0, False
    tgt_at = len(args) - 1 - args[::-1].index("-j") if "-j" in args else len(args)
    while i < tgt_at:
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        res: bool | None = None
        step = 2
        if a == "!":
            neg, i = True, i + 1
            continue
        if a in ("-s", "-d"):
            net = ipaddress.ip_network(nxt)
            res = ipaddress.ip_address(f["SRC" if a == "-s" else "DST"]) in net
        elif a == "-p":
            res = f["PROTO"] == nxt.upper()
        elif a == "--dport":
            res = f["DPT"] == nxt
        elif a == "--mark":
            v, m = (int(x, 16) for x in nxt.split("/"))
            res = mark & m == v
        elif a == "--ctstate":
            states = set(nxt.split(","))
            # every packet here is a SYN opening a new connection; DNAT is a ctstatus we do not track
            res = None if "DNAT" in states else "NEW" in states
        elif a in ("--dst-type", "--src-type", "--probability", "--tcp-flags", "--dports"):
            res = None
            step = 3 if a == "--tcp-flags" else 2
        elif a in ("-m", "--comment", "--mode"):
            res = True
        else:
            raise AssertionError(f"walker does not know {a!r} in {args}")
        if res is not None and neg:
            res = not res
        neg = False
        if res is False:
            return False
        if res is None:
            unknown = True
        i += step
    return None if unknown else True


def set_xmark(mark: int, spec: str) -> int:
    v, m = (int(x, 16) for x in spec.split("/"))
    return (mark & ~m) ^ v


def walk(rules, events) -> tuple[list[str], str]:
    """Check one packet's events against the ruleset; return the hooks it went through and its last target."""
    hooks: list[str] = []
    stack: list[tuple[str, int]] = []
    pos: tuple[str, int] | None = None  # the chain and rule number execution continues after
    ended = True
    mark = 0
    dnat: tuple[str, str] | None = None
    last = ""
    first = events[0][5]
    for _ts, table, chain, kind, num, f in events:
        where = f"{table}:{chain}:{kind}:{num}"
        assert chain in rules[table], f"{where}: no such chain"
        n = len(rules[table][chain])
        assert f.get("MARK") == (hex(mark) if mark else None), f"{where}: MARK {f.get('MARK')} != {mark:#x}"
        want_dst = dnat or (first["DST"], first["DPT"])
        assert (f["DST"], f["DPT"]) == want_dst, f"{where}: DST:DPT not as NATed"
        same = {k: v for k, v in f.items() if k not in CHANGING}
        assert same == {k: v for k, v in first.items() if k not in CHANGING}, f"{where}: fields changed"
        if ended:  # a new traversal starts at a hook's built-in chain
            assert chain in BUILTIN, f"{where}: a traversal must start in a built-in chain"
            hooks.append(f"{table}:{chain}")
            stack, pos, ended = [], (chain, 0), False
        else:
            assert table == hooks[-1].split(":")[0], f"{where}: table changed mid-traversal"
            assert pos is not None and chain == pos[0] and num > pos[1], f"{where}: cannot follow {pos}"
        # the rules skipped between the resume point and this step must not match
        upto = num - 1 if kind == "rule" else n
        for k in range(pos[1] + 1, upto + 1):
            skipped = rules[table][chain][k - 1]
            assert matches(skipped, f, mark) is not True, f"{where}: rule {k} should have matched"
        if kind == "policy":
            assert chain in BUILTIN and num == n + 1, f"{where}: policy is rules+1 of a built-in chain"
            ended, last = True, "policy"
            continue
        if kind == "return":
            assert chain not in BUILTIN and num == n + 1, f"{where}: return is rules+1 of a user chain"
            assert stack, f"{where}: return with nothing to return to"
            pos = stack.pop()
            continue
        assert 1 <= num <= n, f"{where}: no rule {num} (chain has {n})"
        args = rules[table][chain][num - 1]
        assert matches(args, f, mark) is not False, f"{where}: rule does not match the packet: {args}"
        tgt, targs = target(args)
        last = tgt or ""
        if tgt in TERMINAL:
            ended = True
            if tgt == "DNAT":
                dnat = tuple(targs[targs.index("--to-destination") + 1].split(":"))
        elif tgt in CONTINUE:
            if tgt == "MARK":
                mark = set_xmark(mark, targs[targs.index("--set-xmark") + 1])
            pos = (chain, num)
        elif tgt == "RETURN":
            pos = stack.pop()
        else:
            assert tgt in rules[table], f"{where}: jump to unknown chain {tgt}"
            stack.append((chain, num))
            pos = (tgt, 0)
    assert ended, f"{events[-1][1]}:{events[-1][2]}: the packet's log stops mid-traversal"
    path = FORWARD_PATH if hooks[3:4] == ["mangle:FORWARD"] else INPUT_PATH
    assert hooks == path[: len(hooks)], f"hooks out of kernel order: {hooks}"
    out = events[-1][5]
    if path is FORWARD_PATH:
        assert len(hooks) == len(FORWARD_PATH), f"forwarded packet stops early: {hooks}"
        assert out["OUT"] and int(out["TTL"]) == int(first["TTL"]) - 1 and dnat is not None
    else:
        assert last in ("DROP", "REJECT"), f"local packet neither dropped nor rejected: {hooks} {last}"
        assert out["OUT"] == "" and out["TTL"] == first["TTL"]
    return hooks, last


# ---- tests -------------------------------------------------------------------------------------


def test_small_mode_writes_both_files(tmp_path: Path) -> None:
    assert gen.main(["--small", "--out", str(tmp_path)]) == 0
    rules = read_rules(tmp_path / "kube.rules")
    assert set(rules) == {"raw", "mangle", "nat", "filter"}
    services = [r for r in rules["nat"]["KUBE-SERVICES"] if "KUBE-NODEPORTS" not in r]
    assert 0 < len(services) <= gen.SMALL_SERVICES
    assert len({e[5]["SEQ"] for e in read_log(tmp_path / "kube.log")}) == gen.SMALL_PACKETS


def test_same_seed_same_bytes_other_seed_other_bytes(small: Path, tmp_path: Path) -> None:
    args = ["--services", str(SERVICES), "--packets", "50", "--out"]
    gen.main(args + [str(tmp_path / "a"), "--seed", str(SEED)])
    gen.main(args + [str(tmp_path / "b"), "--seed", str(SEED + 1)])
    assert (tmp_path / "a" / "kube.rules").read_bytes() == (small / "kube.rules").read_bytes()
    assert (tmp_path / "b" / "kube.rules").read_bytes() != (small / "kube.rules").read_bytes()
    assert (tmp_path / "a" / "kube.log").read_bytes() != (tmp_path / "b" / "kube.log").read_bytes()


def test_ruleset_has_kube_proxy_layout(small: Path) -> None:
    rules = read_rules(small / "kube.rules")
    nat = rules["nat"]
    last = nat["KUBE-SERVICES"][-1]
    assert target(last)[0] == "KUBE-NODEPORTS"
    assert "kubernetes service nodeports; NOTE: this must be the last rule in this chain" in last
    assert all(target(r)[0].startswith("KUBE-SVC-") for r in nat["KUBE-SERVICES"][:-1])
    hashed = [c for t in rules.values() for c in t if re.match(r"KUBE-(SVC|SEP|EXT|XLB)-", c)]
    assert hashed and all(re.fullmatch(r"KUBE-(SVC|SEP|EXT|XLB)-[A-Z2-7]{16}", c) for c in hashed)
    for table, chains in rules.items():
        for chain, rs in chains.items():
            for r in rs:
                t = target(r)[0]
                assert t is not None, f"{table}:{chain}: rule without target"
                known = t in chains or t in TERMINAL | CONTINUE | {"RETURN"}
                assert known, f"{table}:{chain}: unknown target {t}"
    # every KUBE-SEP chain: masquerade hairpin traffic, then DNAT to its endpoint
    for chain, rs in nat.items():
        if chain.startswith("KUBE-SEP-"):
            assert [target(r)[0] for r in rs] == ["KUBE-MARK-MASQ", "DNAT"]
            assert rs[0][1].split("/")[0] == target(rs[1])[1][1].split(":")[0]
    # statistic probabilities of a service: 1/n, 1/(n-1), …, then an unconditional last jump
    for chain, rs in nat.items():
        if chain.startswith("KUBE-SVC-"):
            seps = rs[1:]
            n = len(seps)
            probs = [float(r[r.index("--probability") + 1]) for r in seps[:-1]]
            assert probs == pytest.approx([1 / (n - j) for j in range(n - 1)], abs=1e-9)
            assert "--probability" not in seps[-1]


def test_trace_lines_follow_the_ruleset(small: Path) -> None:
    rules = read_rules(small / "kube.rules")
    events = read_log(small / "kube.log")
    stamps = [e[0] for e in events]
    assert stamps == sorted(stamps)
    packets: dict[str, list] = defaultdict(list)
    for e in events:
        packets[e[5]["SEQ"]].append(e)
    assert len(packets) == PACKETS
    ids = Counter()
    outcomes = Counter()
    for seq, evs in packets.items():
        f0 = evs[0][5]
        ident = (f0["ID"], f0["SPT"], f0["SRC"])
        assert all((e[5]["ID"], e[5]["SPT"], e[5]["SRC"]) == ident for e in evs), seq
        ids[f0["ID"]] += 1
        hooks, last = walk(rules, evs)
        outcomes[(hooks[-1], last)] += 1
    assert max(ids.values()) == 1, "IP IDs repeat"
    # the three fates of a NodePort SYN are all there: forwarded, dropped by mark, rejected
    assert outcomes[("nat:POSTROUTING", "MASQUERADE")] > PACKETS // 2
    assert outcomes[("filter:INPUT", "DROP")] > 0
    assert outcomes[("filter:INPUT", "REJECT")] > 0
    assert sum(outcomes.values()) == PACKETS
    # a few packets are in flight at once, never many
    open_, most = set(), 0
    for e in events:
        open_.add(e[5]["SEQ"])
        most = max(most, len(open_))
        if e is packets[e[5]["SEQ"]][-1]:
            open_.discard(e[5]["SEQ"])
    assert 2 <= most <= 3


def test_walker_rejects_a_wrong_rule_number(small: Path) -> None:
    rules = read_rules(small / "kube.rules")
    events = read_log(small / "kube.log")
    first = [e for e in events if e[5]["SEQ"] == events[0][5]["SEQ"]]
    i = next(k for k, e in enumerate(first) if e[2] == "KUBE-NODEPORTS" and e[3] == "rule")
    bad = list(first)
    bad[i] = bad[i][:4] + (bad[i][4] + 1,) + bad[i][5:]
    with pytest.raises(AssertionError):
        walk(rules, bad)


def _kernel_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables-legacy-restore", "iptables-legacy-save"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@pytest.mark.kernel
def test_kernel_accepts_ruleset_and_saves_it_back_identically(small: Path) -> None:
    why = _kernel_ready()
    if why:
        pytest.skip(why)
    ns = f"rtb5t{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        text = (small / "kube.rules").read_bytes()
        r = subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy-restore", "--test"], input=text,
                           capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy-restore"], input=text, check=True)
        saved = subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy-save"], capture_output=True,
                               check=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    def by_table(t: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        cur: list[str] = []
        for line in t.splitlines():
            if line.startswith("*"):
                cur = out.setdefault(line[1:], [])
            elif line and not line.startswith("#") and line != "COMMIT":
                cur.append(line)
        return out

    # the kernel's own listing equals the generated text: so its rule numbers are the kernel's
    assert by_table(saved) == by_table(text.decode())


def _sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=kw.pop("check", True), capture_output=True, text=True, **kw)


def _one_of_each_kind() -> tuple[object, dict[str, object]]:
    for seed in range(1, 50):
        c = gen.build(40, seed)
        pick: dict[str, object] = {}
        for s in c.services:
            pick.setdefault(s.kind, s)
        if {"ext", "legacy", "noeps", "xlb"} <= set(pick):
            pick.pop("cluster", None)
            return c, pick
    raise AssertionError("no seed gives every kind of NodePort service")


@pytest.mark.kernel
def test_kernel_prints_the_generated_lines(tmp_path: Path) -> None:
    """One SYN per kind of service through a namespace loaded with a generated ruleset: the kernel's
    TRACE lines equal the generator's, except the MAC addresses and TCP options of the test hosts."""
    why = _kernel_ready() or (None if shutil.which("dmesg") else "dmesg not installed")
    if why:
        pytest.skip(why)
    flag = Path("/proc/sys/net/netfilter/nf_log_all_netns")
    if not flag.exists():
        pytest.skip("no nf_log_all_netns sysctl")
    if flag.read_text().strip() != "1":
        _sh("sysctl", "-qw", "net.netfilter.nf_log_all_netns=1")  # lets namespaces log to the kernel log
    c, pick = _one_of_each_kind()
    rules = "".join(gen.ruleset_lines(c))
    tag = uuid.uuid4().hex[:6]
    node, client, pods = (f"rtb5t{tag}{r}" for r in "ncp")
    third = int(tag[:2], 16) % 250 + 1
    srcs = {k: (f"198.51.{third}.{10 + i}", 41000 + i) for i, k in enumerate(pick)}
    created: list[str] = []
    try:
        for ns in (node, client, pods):
            _sh("ip", "netns", "add", ns)
            created.append(ns)
        _sh("ip", "link", "add", "eth0", "netns", node, "type", "veth", "peer", "name", "c0", "netns", client)
        _sh("ip", "link", "add", "cni0", "netns", node, "type", "veth", "peer", "name", "p0", "netns", pods)
        _sh("ip", "link", "add", "flannel.1", "netns", node, "type", "veth", "peer", "name", "p1", "netns",
            pods)
        for ns, dev in ((node, "eth0"), (node, "cni0"), (node, "flannel.1"), (client, "c0"), (pods, "p0"),
                        (pods, "p1"), (node, "lo"), (client, "lo")):
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", node, "addr", "add", f"{gen.NODE_IP}/24", "dev", "eth0")
        _sh("ip", "-n", node, "addr", "add", f"{gen.LOCAL_POD_PREFIX}1/24", "dev", "cni0")
        _sh("ip", "-n", node, "route", "add", gen.POD_CIDR, "dev", "flannel.1")
        _sh("ip", "-n", node, "route", "add", "default", "via", "192.168.10.1")
        _sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _sh("ip", "-n", client, "addr", "add", "192.168.10.1/24", "dev", "c0")
        for ip, _ in srcs.values():
            _sh("ip", "-n", client, "addr", "add", f"{ip}/32", "dev", "c0")
        _sh("ip", "netns", "exec", node, "iptables-legacy-restore", input=rules)
        # one SYN each, no retransmission (the first comes after 1 s)
        code = ("import socket, sys, time\nsocks = []\n"
                "for a in sys.argv[2:]:\n"
                "    ip, sport, dport = a.split(':')\n"
                "    s = socket.socket(); s.bind((ip, int(sport))); s.setblocking(False)\n"
                "    s.connect_ex((sys.argv[1], int(dport))); socks.append(s)\n"
                "time.sleep(0.4)\n")
        _sh("ip", "netns", "exec", client, sys.executable, "-c", code, gen.NODE_IP,
            *(f"{ip}:{sp}:{pick[k].nodeport}" for k, (ip, sp) in srcs.items()))
        time.sleep(0.2)
        kmsg = _sh("dmesg").stdout.splitlines()
    finally:
        for ns in created:
            _sh("ip", "netns", "del", ns, check=False)

    def norm(text: str) -> str:
        return re.sub(r"OPT \([0-9A-F]*\)", "OPT (…)", re.sub(r"MAC=\S+", "MAC=…", text))

    for kind, s in pick.items():
        ip, sport = srcs[kind]
        got = [line.split("TRACE: ", 1)[1] for line in kmsg
               if "TRACE: " in line and f" SRC={ip} " in line and f" SPT={sport} " in line]
        if not got:
            pytest.skip("the kernel logged no TRACE lines (is nf_log_ipv4 the IPv4 logger?)")
        f0 = dict(kv.split("=", 1) for kv in got[0].split() if "=" in kv)
        svc = re.compile(rf"nat:{s.svc_chain}:rule:(\d+) ")
        ep = next((int(m.group(1)) - 2 for g in got if (m := svc.match(g))), 0)
        want = gen.packet_lines(c, s, ep=ep, src=ip, spt=sport, ip_id=int(f0["ID"]), seq=int(f0["SEQ"]))
        assert [norm(g) for g in got] == [norm(w.rstrip("\n")) for w in want], kind
