"""Who made a rule or chain, where the host says so: the owner vocabulary (one home).

Products name their chains and comment their rules in fixed ways; this module reads those
names back. Pure functions of a rule's text, its table and chain names (what an explanation and
its JSON keep), never of the host. What each product writes:

* Kubernetes (kube-proxy, iptables mode): ``KUBE-*`` chains; comments naming the service port
  ``ns/svc:port`` alone or followed by ``cluster IP``, ``external IP``, ``has no local endpoints``,
  ``-> 10.0.0.5:80`` …; ``KUBE-SVC/SVL/SEP/FW/XLB/EXT-<hash>`` chains (the hash hides the name).
  nftables mode (table ``kube-proxy``): chains ``service-<hash>-ns/svc/tcp/port``,
  ``external-…`` and ``endpoint-<hash>-ns/svc/tcp/port__10.0.0.5/80``.
* Docker: ``DOCKER``, ``DOCKER-USER``, ``DOCKER-ISOLATION-STAGE-1/2``, ``DOCKER-FORWARD`` … chains,
  bridges ``docker0`` / ``br-<12 hex>``, published ports as DNAT rules in nat ``DOCKER``; nft
  tables named ``docker…`` with chains ending ``__<bridge>``.
* Calico: ``cali-`` chains (``cali-tw-``/``cali-fw-`` workloads, ``cali-pi-``/``cali-po-`` policies,
  ``cali-pri-``/``cali-pro-`` profiles), also behind a table prefix in nft (``filter-cali-…``);
  comments ``cali:<rule id>`` and ``Policy NAME ingress``.
* firewalld: zone chains ``IN_public``, ``IN_public_allow``, ``FWDI_public`` …, policy chains
  ``IN_policy_NAME``; in nft (table ``firewalld``) the same names behind ``filter_``/``nat_``/….
  A reject by firewalld's own catch-all right after the packet fell off a zone's chains is the
  zone's (its default target): explain/causes.py adds that link, and ``deciding_owner`` reads it.
  Service names are not in the ruleset (the ``_allow`` chain holds their ports).
* libvirt: ``LIBVIRT_INP/OUT/FWI/FWO/FWX/PRT`` chains, ``virbrN`` bridges; nft tables ``libvirt…``.
* OpenWrt fw4 (table ``fw4``): ``input_lan``, ``forward_wan``, ``accept_to_wan``, ``srcnat_wan`` …;
  rule comments ``!fw4: NAME``.
* OpenStack neutron: ``neutron-*`` (older ``quantum-*``) chains of its agents.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ..errors import RuletraceError
from ..model import CauseLink, Explanation, Rule, StepKind
from ..rulesets.iptables_save import find_target
from ..rulesets.nft_model import rule_facts
from .docker_names import DockerNames

KINDS = ("kubernetes", "docker", "calico", "firewalld", "libvirt", "fw4", "openstack")
# cause links that point at rules the packet did not match (analyze/near_miss.py): never its owners
NOT_ON_PATH = frozenset({"near miss", "INPUT rule"})
# products whose zone (or policy) chains end without a verdict and leave it to a catch-all rule of
# the product's own after them (firewalld: a zone's default target is the reject after the zone
# dispatch): a packet rejected there right after falling off such a chain is that zone's
# (explain/causes.py, the "fell off" link)
FALLS_TO_CATCH_ALL = frozenset({"firewalld"})


@dataclass(frozen=True, slots=True)
class Owner:
    """Who made a rule or chain, and what the host's own words were."""

    kind: str  # one of KINDS
    name: str  # what it names: "ns/svc:http", "docker0", "zone public", "policy allow-web"; else the chain
    detail: str = ""  # "has no local endpoints", "endpoint 10.0.0.5:80", "published port 8080/tcp -> …"
    evidence: str = ""  # what says so: 'comment "…"', "chain KUBE-SVC-…", "table fw4"
    specific: bool = True  # names an object the user made (service, network, zone); False: product plumbing

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f" ({self.detail})" if self.detail else "")

    def as_json(self) -> dict[str, str | bool]:
        """The owner as JSON (docs/json-schema.md ``owner``)."""
        return {"kind": self.kind, "name": self.name, "detail": self.detail, "evidence": self.evidence,
                "specific": self.specific}

    def matches(self, want: str) -> bool:
        """``--match owner=WANT``: the kind, the name, or the name up to a ``:`` / space (ns/svc -> ns/svc:http)."""
        w = want.strip().lower()
        name = self.name.lower()
        if not w:
            return False
        if w in (self.kind, name, f"{self.kind}:{name}", f"{self.kind}/{name}"):
            return True
        return name.startswith((w + ":", w + " ")) or name.endswith(" " + w)


# --- comments: iptables-save (--comment "x" / --comment x), iptables -L (/* x */), nft (comment "x")
_COMMENTS = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))|/\* (.*?) \*/|(?<![-\w])comment "((?:[^"\\]|\\.)*)"')


def rule_comments(text: str) -> list[str]:
    """Every comment of a rule, unquoted, in order (Calico writes two)."""
    out = []
    for m in _COMMENTS.finditer(text):
        c = next(g for g in m.groups() if g is not None)
        out.append(c.replace('\\"', '"').replace("\\'", "'"))
    return out


def _target(rule: Rule | None) -> str | None:
    """The rule's target, from its text when the rule was rebuilt without one (JSON read back)."""
    if rule is None:
        return None
    if rule.target or not rule.text:
        return rule.target
    try:
        return find_target(rule.text)[0] if rule.text.startswith("-A ") else rule_facts(rule.text)[0]
    except RuletraceError:  # a damaged text (an unbalanced quote): no target to tell an owner by
        return None


def _arg(text: str, *flags: str) -> str | None:
    """The value after the first of ``flags`` (iptables or nft keyword), quotes removed; None if absent."""
    for f in flags:
        m = re.search(rf'(?:^|\s)(!\s+)?{re.escape(f)}\s+(!=\s+)?"?([^\s"]+)"?', text)
        if m and not (m.group(1) or m.group(2)):
            return m.group(3)
    return None


def rule_interfaces(text: str) -> list[str]:
    """Every interface a rule names (negated ones too: ``! -i docker0`` names docker0), wildcards as
    written (``veth+``, ``"veth*"``), each of an nft name set (``oifname { "br0", "br1" }``)."""
    # nft: iifname/oifname, and iif/oif (an interface index nft lists by its quoted name: libvirt
    # writes them; ``fib saddr . iif oif missing`` names none); a concatenation (``iifname .
    # oifname { … }``) pairs names with each other: not read
    out: list[str] = []
    for one, many, index in _IFACE.findall(text):
        if one or index:
            out.append(one or index)
        else:
            out += _IFNAME.findall(many)
    for body in _IFACE_VMAP.findall(text):  # fw4/firewalld's dispatch: iifname vmap { "wan" : jump …, … }
        out += [m.group(1) for e in body.split(",") if (m := _IFNAME.match(e.strip().partition(" : ")[0]))]
    return out


_IFNAME_CHARS = r"[\w.+*@-]*[\w+*@-]"  # an interface name (a lone "." is the concatenation operator)
_IFNAME = re.compile(rf'"?({_IFNAME_CHARS})"?')
_IFACE_VMAP = re.compile(r'(?:^|(?<!\.)\s)(?:iifname|oifname)\s+vmap\s+\{([^}]*)\}')
_IFACE = re.compile(rf'(?:^|(?<!\.)\s)(?:(?:-i|-o|--in-interface|--out-interface|iifname|oifname)\s+(?:!=?\s+)?'
                    rf'(?:(?!(?:vmap|map)\s)(?!@)"?({_IFNAME_CHARS})"?(?=\s|$)|\{{([^}}]*)\}})'
                    rf'|(?:iif|oif)\s+(?:!=?\s+)?"({_IFNAME_CHARS})")')


def _dport(text: str) -> str | None:
    return _arg(text, "--dport", "--destination-port", "dport")


def _proto(text: str) -> str | None:
    p = _arg(text, "-p", "--protocol", "l4proto")
    if p is None:
        m = re.search(r"(?:^|\s)(tcp|udp|sctp) dport", text)
        p = m.group(1) if m else None
    return p


def _to(text: str) -> str | None:
    m = re.search(r"--to-destination (\S+)|\bdnat (?:ip6? )?to (\S+)", text)
    return (m.group(1) or m.group(2)) if m else None


# --- Kubernetes
def _is_network(text: str) -> bool:
    """True for an address or network ("10.0.0.0/8"). The texts asked are what _K8S_SVC matched
    (no colon): an address among them starts with a digit, and most ("ns/svc") do not -- a cheap
    no before ipaddress raises (~1/3 of the owner lookups of a kube-proxy path)."""
    if not text[:1].isdigit():
        return False
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


_K8S_PART = r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?"
_K8S_SVC = re.compile(rf"(?<![\w/.:-])({_K8S_PART}/{_K8S_PART})(?::([-a-z0-9]+))?(?![\w/])")
_K8S_NFT_CHAIN = re.compile(
    rf"^(service|external|endpoint|firewall)-([A-Z0-9]+)-({_K8S_PART})/({_K8S_PART})/(\w+)/([^_/]*)(?:__(.+)/(\d+))?$"
)
_K8S_HASHED = {"SVC": "service", "SVL": "service, local endpoints", "SEP": "endpoint", "FW": "load-balancer firewall",
               "XLB": "external traffic, local endpoints", "EXT": "external traffic"}
_K8S_NFT_PLUMBING = frozenset({
    "mark-for-masquerade", "cluster-ips-check", "nodeport-endpoints-check", "service-endpoints-check",
    "firewall-check", "reject-chain", "masquerading", "services", "nodeports",
})


def _k8s_comment(comment: str, chain: str) -> Owner | None:
    m = _K8S_SVC.search(comment)
    if m is None or _is_network(m.group(1)):  # "allow 10.0.0.0/8" names a network, not ns/svc
        return None
    name = m.group(1) + (f":{m.group(2)}" if m.group(2) else "")
    if m.start() == 0:
        rest = comment[m.end():].strip()
        detail = f"endpoint {rest[3:].strip()}" if rest.startswith("-> ") else rest
    else:
        detail = comment
    if not detail and chain.startswith("KUBE-SEP-"):
        detail = "endpoint"
    return Owner("kubernetes", name, detail, f'comment "{comment}"')


# a verdict map's element the packet selected, as a rule of the chain whose lookup it answered
# (analyze/vmap_owner): the text names the map, then the element as listed
ELEMENT_OF = "element of @"
ELEMENT_EVIDENCE = "element of map @"  # an owner's evidence when a map element's comment named it
# kube-proxy's nftables maps whose elements are services without endpoints (their verdict is the
# reject-chain or drop): what such an element's service is told
_K8S_NO_ENDPOINTS = {"no-endpoint-services": "has no endpoints", "no-endpoint-nodeports": "has no endpoints"}


def element_rule(rule: Rule, set_name: str, element: str) -> Rule:
    """The element ``element`` of map ``set_name`` that ``rule``'s lookup selected, as a rule of its
    chain (its owner is read as any rule's: from its comment)."""
    return Rule(rule.table, rule.chain, rule.num, f"{ELEMENT_OF}{set_name}: {element}", handle=rule.handle)


def _kubernetes(rule: Rule | None, table: str, chain: str) -> Owner | None:
    m = _K8S_NFT_CHAIN.match(chain)
    if m:
        kind, _, ns, svc, proto, port, ep, ep_port = m.groups()
        ep_addr = f"[{ep}]" if ep and ":" in ep else ep  # an IPv6 endpoint with its port: [fd00::5]:80
        detail = f"endpoint {ep_addr}:{ep_port}" if ep else f"{kind} ({proto})" if kind != "service" else ""
        return Owner("kubernetes", f"{ns}/{svc}:{port}" if port else f"{ns}/{svc}", detail, f"chain {chain}")
    kube_chain = chain.startswith("KUBE-") or table == "kube-proxy" or chain in _K8S_NFT_PLUMBING
    target = _target(rule)
    if rule is not None and (kube_chain or (target or "").startswith("KUBE-")):
        for c in rule_comments(rule.text):
            got = _k8s_comment(c, chain)
            if got is not None and rule.text.startswith(ELEMENT_OF):
                name = rule.text[len(ELEMENT_OF):].partition(":")[0]
                return Owner(got.kind, got.name, got.detail or _K8S_NO_ENDPOINTS.get(name, ""),
                             f'{ELEMENT_EVIDENCE}{name}: comment "{c}"')
            if got is not None:
                if got.detail == "endpoint" or (not got.detail and chain.startswith("KUBE-SEP-")):
                    to = _to(rule.text)
                    got = Owner(got.kind, got.name, f"endpoint {to}" if to else "endpoint", got.evidence)
                return got
        tm = _K8S_NFT_CHAIN.match(target or "")
        if tm:
            return _kubernetes(None, table, target or "")
    if not kube_chain:
        return None
    hm = re.match(r"KUBE-(SVC|SVL|SEP|FW|XLB|EXT)-[A-Z0-9]+$", chain)
    if hm:
        return Owner("kubernetes", chain, _K8S_HASHED[hm.group(1)] + "; the name is hashed", f"chain {chain}")
    comments = rule_comments(rule.text) if rule is not None else []
    return Owner("kubernetes", chain, comments[0] if comments else "", f"chain {chain}", specific=False)


# --- Docker
_DOCKER_CHAIN = re.compile(r"^DOCKER(?:-[A-Z0-9-]+)?$")
_DOCKER_BRIDGE = re.compile(r"^(?:docker\d+|br-[0-9a-f]{12}|docker_gwbridge)$")
_DOCKER_ROLE = {"DOCKER-USER": "your rules, run before Docker's", "DOCKER-ISOLATION-STAGE-1": "network isolation",
                "DOCKER-ISOLATION-STAGE-2": "network isolation", "DOCKER-INGRESS": "swarm ingress"}


_DOCKER_NAMES: DockerNames | None = None  # what the host's docker said (live/dockerhost.py), if it answered


def use_docker_names(names: DockerNames | None) -> None:
    """Name Docker's bridges and containers as the host's docker does (None: from the ruleset only)."""
    global _DOCKER_NAMES
    _DOCKER_NAMES = names
    _owner.cache_clear()


def _docker(rule: Rule | None, table: str, chain: str) -> Owner | None:
    text = rule.text if rule is not None else ""
    ifaces = rule_interfaces(text)
    bridges = [i for i in ifaces if _DOCKER_BRIDGE.match(i)]
    nft_bridge = chain.rpartition("__")[2] if table.startswith("docker") and "__" in chain else None
    ours = bool(_DOCKER_CHAIN.match(chain)) or table.startswith("docker") or bool(bridges)
    target = _target(rule)
    ours = ours or bool(target and _DOCKER_CHAIN.match(target))
    if not ours:
        return None
    bridge = nft_bridge or (bridges[0] if bridges else None)
    if bridge is None and _DOCKER_CHAIN.match(chain) and chain != "DOCKER-USER" and ifaces:
        bridge = ifaces[0]  # in Docker's own chains an interface is a Docker network's bridge
        # (not in DOCKER-USER: the user's own rules there name host interfaces too)
    dport, proto, to = _dport(text), _proto(text), _to(text)
    detail = _DOCKER_ROLE.get(chain, "")
    if rule is not None and chain == "DOCKER" and dport:
        if to:
            detail = f"published port {dport}/{proto or '?'} -> {to}"
        else:
            dst = _arg(text, "-d", "--destination", "daddr")
            detail = f"published port, to {dst.split('/')[0] + ':' if dst else ''}{dport}/{proto or '?'}"
    name = chain if _DOCKER_CHAIN.match(chain) or not target else target
    evidence = (f"bridge {bridge}" if bridge else f"table {table}" if table.startswith("docker")
                else f"chain {chain}" if name == chain else f"target {name}")
    names = _DOCKER_NAMES
    if names is not None:  # the host's docker answered: its network and container names
        ctr = names.container(to or (_arg(text, "-d", "--destination", "daddr") if detail else None))
        if ctr and detail.startswith("published"):
            detail = f"{detail} (container {ctr})"
        net = names.network(bridge)
        if net:
            return Owner("docker", f"network {net}", detail, f"{evidence}, docker inspect")
    if bridge:
        return Owner("docker", bridge, detail, evidence)
    return Owner("docker", name, detail or _DOCKER_ROLE.get(name, ""), evidence,
                 specific=detail.startswith("published"))


def published_port(o: Owner, rule: Rule | None, links: Iterable[CauseLink]) -> Owner:
    """Docker's filter rule ``rule`` names only the container's side of a published port ("published
    port, to 172.17.0.2:80/tcp"); the DNAT in nat DOCKER that rewrote the packet on the same path (a
    ``rewritten`` link) names the host's: when its ``--to`` is the filter rule's destination address
    and port, for the same protocol (read from both rules' texts), the owner takes the DNAT rule's
    words ("published port 8080/tcp -> 172.17.0.2:80", with the container where docker named it)."""
    if o.kind != "docker" or rule is None:
        return o
    text = rule.text
    dst, dport, proto = _arg(text, "-d", "--destination", "daddr"), _dport(text), _proto(text)
    if not dst or not dport or _to(text):
        return o
    addr = dst.split("/")[0]
    for link in links:
        if link.role != "rewritten" or link.rule is None:
            continue
        to = _to(link.rule.text)
        if to is None or _proto(link.rule.text) != proto:
            continue
        host, _, port = to.rpartition(":")
        if host.strip("[]") == addr and port == dport:
            x = owner_of(link.table, link.chain, link.rule)
            if x is not None and x.kind == "docker" and x.detail:
                return Owner(o.kind, o.name, x.detail, o.evidence)
    return o


# --- Calico
_CALI_CHAIN = re.compile(r"^(?:(?:filter|nat|mangle|raw)-)?cali-(?:(tw|fw|th|fh|pri|pro|pi|po|sm)-)?(.+)$")
_CALI_ROLE = {"tw": ("workload", "to workload"), "fw": ("workload", "from workload"),
              "th": ("host endpoint", "to host endpoint"), "fh": ("host endpoint", "from host endpoint"),
              "pri": ("profile", "inbound"), "pro": ("profile", "outbound"),
              "pi": ("policy", "inbound"), "po": ("policy", "outbound"), "sm": ("workload", "endpoint mark")}
_CALI_POLICY = re.compile(r"\b(Policy|Profile) (\S+)(?: (ingress|egress|inbound|outbound))?")


def _calico(rule: Rule | None, table: str, chain: str) -> Owner | None:
    comments = rule_comments(rule.text) if rule is not None else []
    ids = [c for c in comments if c.startswith("cali:")]
    m = _CALI_CHAIN.match(chain)
    if m is None and not ids and table != "calico":
        return None
    for c in comments:
        pm = _CALI_POLICY.search(c)
        if pm:
            return Owner("calico", f"{pm.group(1).lower()} {pm.group(2)}", pm.group(3) or "", f'comment "{c}"')
    target = _target(rule)
    if target:
        tm = _CALI_CHAIN.match(target)
        if tm and tm.group(1) in ("pi", "po", "pri", "pro"):
            what, direction = _CALI_ROLE[tm.group(1)]
            return Owner("calico", f"{what} {tm.group(2)}", direction, f"target {target}")
    evidence = f'comment "{ids[0]}"' if ids else f"chain {chain}"
    if m is not None and m.group(1):
        what, direction = _CALI_ROLE[m.group(1)]
        return Owner("calico", f"{what} {m.group(2)}", direction, f"chain {chain}")
    return Owner("calico", chain, "", evidence, specific=False)


# --- firewalld
_FWD_ZONE = re.compile(r"^(?:(?:filter|nat|mangle|raw)_)?(IN|OUT|FWDI|FWDO|FWD|PRE|POST)_(.+?)(?:_(pre|log|deny|allow|post|rich))?$")
_FWD_DIR = {"IN": "input", "OUT": "output", "FWDI": "forward in", "FWDO": "forward out", "FWD": "forward",
            "PRE": "prerouting", "POST": "postrouting"}
_FWD_PLUMBING = re.compile(r"^(?:(?:filter|nat|mangle|raw)_)?[A-Z]+(?:_[A-Z]+)*_(?:ZONES|ZONES_SOURCE|direct|POLICIES\w*)$")


def _firewalld(rule: Rule | None, table: str, chain: str) -> Owner | None:
    in_table = table == "firewalld"
    m = _FWD_ZONE.match(chain)
    if m and (in_table or not re.match(r"^(filter|nat|mangle|raw)_", chain)):
        where, zone, part = m.groups()
        role = _FWD_DIR[where] + (f", {part}" if part else "")
        if zone.startswith("policy_"):
            return Owner("firewalld", f"policy {zone[7:]}", role, f"chain {chain}")
        return Owner("firewalld", f"zone {zone}", role, f"chain {chain}")
    if in_table or _FWD_PLUMBING.match(chain):
        return Owner("firewalld", chain, "", f"table {table}" if in_table else f"chain {chain}", specific=False)
    return None


# --- libvirt
_LIBVIRT_ROLE = {"LIBVIRT_INP": "input from guests", "LIBVIRT_OUT": "output to guests",
                 "LIBVIRT_FWI": "forward to guests", "LIBVIRT_FWO": "forward from guests",
                 "LIBVIRT_FWX": "between guests of one network", "LIBVIRT_PRT": "NAT of guests",
                 "guest_input": "forward to guests", "guest_output": "forward from guests",
                 "guest_cross": "between guests of one network", "guest_nat": "NAT of guests"}


def _libvirt(rule: Rule | None, table: str, chain: str) -> Owner | None:
    if not (chain.startswith("LIBVIRT_") or table.startswith("libvirt")):
        return None
    bridges = [i for i in rule_interfaces(rule.text if rule is not None else "") if re.match(r"^virbr\d+$", i)]
    role = _LIBVIRT_ROLE.get(chain, "")
    if bridges:
        return Owner("libvirt", bridges[0], role, f"bridge {bridges[0]}")
    return Owner("libvirt", chain, role, f"chain {chain}", specific=False)


# --- OpenWrt fw4
_FW4_ZONE = re.compile(r"^(input|output|forward|accept_to|accept_from|reject_to|reject_from|drop_to|drop_from"
                       r"|dstnat|srcnat|helper)_(.+)$")


def _fw4(rule: Rule | None, table: str, chain: str) -> Owner | None:
    named = [c[6:].strip() for c in (rule_comments(rule.text) if rule is not None else []) if c.startswith("!fw4:")]
    if table != "fw4" and not named:
        return None
    m = _FW4_ZONE.match(chain)
    detail = f"rule {named[0]}" if named else m.group(1).replace("_", " ") if m else ""
    if m:
        return Owner("fw4", f"zone {m.group(2)}", detail, f"chain {chain} of table {table}")
    # a "!fw4:" comment names a user's rule, except in fw4's own handle_* chains ("!fw4: Reject TCP
    # traffic" in handle_reject): there the zone chain that jumped in is the owner (a cause link)
    return Owner("fw4", chain, detail, f"table {table}" if table == "fw4" else f'comment "!fw4: {named[0]}"',
                 specific=bool(named) and not chain.startswith("handle_"))


# --- OpenStack neutron (quantum before 2013)
_NEUTRON = re.compile(r"^(?:neutron|quantum)-(l3-agent|openvswi|linuxbri|dhcp-agent|metadata|vpn-agen|filter|postrouting)")


def _openstack(rule: Rule | None, table: str, chain: str) -> Owner | None:
    m = _NEUTRON.match(chain)
    if m is None:
        return None
    text = rule.text if rule is not None else ""
    to, dst = _to(text), _arg(text, "-d", "--destination")
    detail = f"floating IP {dst.split('/')[0]} -> {to}" if to and dst and not _dport(text) else ""
    return Owner("openstack", f"neutron {m.group(1)}", detail, f"chain {chain}", specific=bool(detail))


_RECOGNIZERS = (_kubernetes, _calico, _docker, _firewalld, _libvirt, _fw4, _openstack)


def owner_of(table: str | None, chain: str | None, rule: Rule | None = None) -> Owner | None:
    """The owner of a rule (or of a chain, without one): the most specific any product's names give."""
    if rule is None:
        return _owner(table or "", chain or "", None, None)
    return _owner(table or "", chain or "", rule.text, rule.target)


@lru_cache(maxsize=1 << 16)
def _owner(table: str, chain: str, text: str | None, target: str | None) -> Owner | None:
    # a function of the names and the text only: cached, as a busy log repeats a few rules
    rule = None if text is None else Rule(table, chain, 0, text, target)
    fallback: Owner | None = None
    for recognize in _RECOGNIZERS:
        got = recognize(rule, table, chain)
        if got is not None:
            if got.specific:
                return got
            fallback = fallback or got
    return fallback


def rule_owner(rule: Rule) -> Owner | None:
    return owner_of(rule.table, rule.chain, rule)


def step_owners(expl: Explanation) -> list[Owner | None]:
    """The owner of each step's rule (a policy or return step: its chain's)."""
    return [owner_of(s.table, s.chain, s.rule if s.kind is StepKind.RULE or s.rule is not None else None)
            for s in expl.steps]


def path_owners(expl: Explanation) -> list[Owner]:
    """The distinct owners along the packet's path, first seen first."""
    out: list[Owner] = []
    for o in step_owners(expl):
        if o is not None and o not in out:
            out.append(o)
    return out


def deciding_owner(expl: Explanation) -> Owner | None:
    """Who decided the packet's fate: the deciding rule's owner, or, when that is only a product's
    plumbing (KUBE-FIREWALL dropping a mark), the nearest cause link that names an object
    (``ns/svc:http has no local endpoints``). Works on summary explanations (no steps) too."""
    v = expl.verdict
    if v is None:
        return None
    first = owner_of(v.table, v.chain, v.rule)
    if first is not None and first.specific:
        return published_port(first, v.rule, expl.cause)
    for link in expl.cause[1:]:  # mark setter, then callers innermost first, then rewrites
        if link.role in NOT_ON_PATH:
            continue
        got = owner_of(link.table, link.chain, link.rule)
        if got is not None and got.specific:
            return got
    return first


def owner_text(expl: Explanation) -> str | None:
    """The deciding rule's owner in a few words, for one-line views: ``kubernetes ns/svc:http (…)``."""
    o = deciding_owner(expl)
    return None if o is None else str(o)
