"""The k8s-nodeport lab scenario (seed 003): an old-layout kube-proxy ruleset on a node."""

from __future__ import annotations

from .netns import Lab
from .scenario import Flow, Scenario

# --- (a) k8s-nodeport: seed 003 -------------------------------------------------------------------
# Old kube-proxy layout (before KEP-3178): a NodePort whose service has no local endpoints jumps to
# KUBE-MARK-DROP (mark 0x8000), and filter KUBE-FIREWALL rule 1 drops marked packets. nodePort 52000
# collides with a host service on 52000; port 80 is DNATed to 52000 by a PREROUTING rule that comes
# after the KUBE-SERVICES jump, so its packets are never marked.

_K8S_SERVICES = [  # (namespace/name:port, nodePort, chain hash)
    ("default/frontend:http", 30080, "GQQFZRC5ZLF3XYGT"),
    ("default/frontend:https", 30443, "4EH5PXDQ3XMCEJQH"),
    ("monitoring/grafana:http", 31300, "JHBHYSU2KMT5NS2V"),
    ("monitoring/prometheus:web", 31090, "ZPNMCVRN2PNDNMW3"),
    ("logging/kibana:http", 31601, "3EJ5T7WN3SGXLOLY"),
    ("ci/jenkins:http", 32080, "7K4LVIMBHXSHPK4C"),
    ("ci/registry:registry", 32500, "Q3PYIYK2DXB2TXJQ"),
]
_K8S_AFTER = [
    ("ootob9/outer-ootob-redis:tcp", 32379, "72PRQ2XITETCHH4U"),
    ("db/postgres:tcp", 32432, "EK4CFJS6A2VWZ4LN"),
]
_XLB = "KUBE-XLB-VETHOZVMBYUVK3NB"
_INGRESS_SVC = "KUBE-SVC-VETHOZVMBYUVK3NB"


def _k8s_rules() -> str:
    chains = [":KUBE-MARK-DROP - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-NODEPORTS - [0:0]",
              ":KUBE-POSTROUTING - [0:0]", ":KUBE-SERVICES - [0:0]", f":{_XLB} - [0:0]",
              f":{_INGRESS_SVC} - [0:0]", ":KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]", ":DOCKER - [0:0]"]
    nodeports, svcs = [], []
    for i, (name, port, h) in enumerate(_K8S_SERVICES + _K8S_AFTER):
        if i == len(_K8S_SERVICES):  # rules 15 and 16: the ingress controller's nodePort
            nodeports.append('-A KUBE-NODEPORTS -s 127.0.0.0/8 -p tcp -m comment --comment '
                             '"ns/ingress-nginx:http" -m tcp --dport 52000 -j KUBE-MARK-MASQ')
            nodeports.append(f'-A KUBE-NODEPORTS -p tcp -m comment --comment "ns/ingress-nginx:http" '
                             f'-m tcp --dport 52000 -j {_XLB}')
        nodeports.append(f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {port} '
                         f'-j KUBE-MARK-MASQ')
        nodeports.append(f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {port} '
                         f'-j KUBE-SVC-{h}')
        chains.append(f":KUBE-SVC-{h} - [0:0]")
        svcs.append(f'-A KUBE-SVC-{h} -p tcp -m comment --comment "{name}" -m tcp -j DNAT '
                    f'--to-destination 10.244.{i + 1}.7:8080')
    assert nodeports[15].endswith(_XLB)  # rule 16, as in the seed
    return "\n".join([
        "*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        "-A PREROUTING -s $client/32 -j TRACE",
        "-A OUTPUT -d $client/32 -j TRACE",
        "COMMIT",
        "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]", *chains,
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A PREROUTING -d $node/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination $node:52000",
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A DOCKER -i docker0 -j RETURN",
        "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        *nodeports,
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-m mark --mark 0x4000/0x4000 -j MASQUERADE",
        '-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment '
        '"default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ',
        '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" '
        "-m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
        'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        '-A KUBE-SVC-NPX46M4PTMTKRN6Y -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT '
        "--to-destination 10.0.0.1:6443",
        f'-A {_INGRESS_SVC} -p tcp -m comment --comment "ns/ingress-nginx:http" -m tcp -j DNAT '
        "--to-destination 10.244.9.3:80",
        *svcs,
        f'-A {_XLB} -s 10.244.0.0/16 -m comment --comment "Redirect pods trying to reach external '
        f'loadbalancer VIP to clusterIP" -j {_INGRESS_SVC}',
        f'-A {_XLB} -m comment --comment "masquerade LOCAL traffic for ns/ingress-nginx:http LB IP" '
        "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        f'-A {_XLB} -m comment --comment "route LOCAL traffic for ns/ingress-nginx:http LB IP to service '
        f'chain" -m addrtype --src-type LOCAL -j {_INGRESS_SVC}',
        f'-A {_XLB} -m comment --comment "ns/ingress-nginx:http has no local endpoints" -j KUBE-MARK-DROP',
        "COMMIT",
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":KUBE-FIREWALL - [0:0]", ":KUBE-FORWARD - [0:0]",
        "-A INPUT -j KUBE-FIREWALL",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        "-A OUTPUT -j KUBE-FIREWALL",
        '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" '
        "-m mark --mark 0x8000/0x8000 -j DROP",
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet '
        'connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 '
        "-j ACCEPT",
        "COMMIT", "",
    ])


def _build_k8s(lab: Lab) -> dict[str, str]:
    client, node = lab.host("client"), lab.host("node")
    c_if, n_if = lab.veth(client, "c0", node, "n0")
    lab.addr(client, c_if, "172.28.129.2/24")
    lab.addr(node, n_if, "172.28.129.4/24")
    return {"client": "172.28.129.2", "node": "172.28.129.4", "node_if": n_if}


K8S_NODEPORT = Scenario(
    name="k8s-nodeport",
    title="Kubernetes NodePort 52000 marked for drop; port 80 DNAT to 52000 works",
    description=(
        "A node with an old-layout kube-proxy ruleset. nodePort 52000 (KUBE-NODEPORTS rule 16, "
        "ns/ingress-nginx:http) has no local endpoints, so KUBE-XLB jumps to KUBE-MARK-DROP, which sets "
        "mark 0x8000; filter KUBE-FIREWALL rule 1 then drops the SYN to the host service on 52000. "
        "A SYN to port 80 is DNATed to 52000 by a nat PREROUTING rule after the KUBE-SERVICES jump, "
        "is never marked and reaches the service (seed 003)."
    ),
    traced="node",
    build=_build_k8s,
    rules_v4=_k8s_rules(),
    listeners={"node": ([52000], [])},
    flows=[
        Flow("syn-52000", "client SYN to node:52000 (nodePort collides with host service)", "tcp",
             "client", "$node", 52000, "local", "node"),
        Flow("syn-80", "client SYN to node:80, DNAT to node:52000", "tcp", "client", "$node", 80,
             "local", "node"),
        Flow("ping", "client ICMP echo to node", "icmp", "client", "$node", None, "local", "node"),
    ],
)
