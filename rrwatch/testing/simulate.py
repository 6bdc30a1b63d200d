"""A simulated Calico cluster in etcd, for the demo, the tests and the benchmarks.

Node values look like what calico/node and kube-controllers write (uid, creationTimestamp,
Kubernetes labels, orchRefs, addresses), encoded as Go would encode them.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable, Mapping

from rrwatch.core import calico, edits
from rrwatch.etcd import Etcd, delete, put

ZONE_LABEL = "topology.kubernetes.io/zone"
BATCH = 128  # etcd's default limit of operations per transaction


def node_name(zone: str, index: int) -> str:
    return f"node-{zone}-{index:05d}"


def node_value(
    name: str, zone: str, index: int, *, labels: Mapping[str, str] | None = None,
    ipv4: str | None = None, ipv6: str | None = None,
) -> bytes:
    """A realistic Calico Node: about ten labels, IPv4 and IPv6 addresses, fields of others.

    The addresses (CIDRs) are derived from the name unless given.
    """
    seed = uuid.uuid5(uuid.NAMESPACE_DNS, name)
    ipv4 = ipv4 or f"{ipaddress.IPv4Address('10.128.0.0') + seed.int % (1 << 22)}/10"
    ipv6 = ipv6 or f"{ipaddress.IPv6Address('fd00:10::') + seed.int % (1 << 64)}/64"
    all_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "m5.xlarge",
        "topology.kubernetes.io/region": "eu-west-1",
        ZONE_LABEL: zone,
        "team": "payments" if index % 3 else "search",
        "rack": f"r{index % 16:02d}",
        **(labels or {}),
    }
    return edits.dumps({
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {
            "name": name,
            "uid": str(seed),
            "creationTimestamp": "2024-05-01T12:00:00Z",
            "labels": dict(sorted(all_labels.items())),
            "annotations": {"projectcalico.org/kube-labels": "{}"},
        },
        "spec": {
            "bgp": {
                "ipv4Address": ipv4,
                "ipv6Address": ipv6,
                "ipv4IPIPTunnelAddr": f"192.168.{index % 256}.1",
            },
            "orchRefs": [{"nodeName": name, "orchestrator": "k8s"}],
            "vxlanTunnelMACAddr": "66:5e:3a:00:00:01",
        },
        "status": {"podCIDRs": [f"192.168.{index % 256}.0/24"]},
    })


def mesh_off(asn: int = 64512) -> bytes:
    """The default BGPConfiguration with the node-to-node mesh off, as after a migration to
    route reflectors."""
    return edits.dumps({
        "kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default", "uid": "5d2e", "creationTimestamp": "2024-05-01T12:00:00Z"},
        "spec": {"nodeToNodeMeshEnabled": False, "asNumber": asn},
    })


def nodes(zone: str, indexes: Iterable[int]) -> dict[str, bytes]:
    """Keys and values of simulated nodes in one zone."""
    out = {}
    for index in indexes:
        name = node_name(zone, index)
        out[calico.NODES + name] = node_value(name, zone, index)
    return out


async def put_all(etcd: Etcd, items: Mapping[str, bytes]) -> int:
    """Write the items in batched transactions; the last revision."""
    revision = 0
    pairs = list(items.items())
    for start in range(0, len(pairs), BATCH):
        result = await etcd.txn([], [put(k, v) for k, v in pairs[start:start + BATCH]])
        revision = result.revision
    return revision


async def delete_all(etcd: Etcd, keys: Iterable[str]) -> int:
    revision = 0
    keys = list(keys)
    for start in range(0, len(keys), BATCH):
        result = await etcd.txn([], [delete(k) for k in keys[start:start + BATCH]])
        revision = result.revision
    return revision
