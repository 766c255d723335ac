"""Real NATs on this machine: network namespaces, veth pairs and nftables masquerade.

``Topology.build(public=3, natted=2)`` makes, with a tag unique to this process:

* an "internet": a bridge in the root namespace (``10.T.0.1/24``, where the test process
  serves its fixture site) with each public node's namespace on it (``10.T.0.11`` ...);
* per home: a router namespace (WAN ``10.T.0.21`` ... on the bridge, LAN ``10.T.1i.1/24``)
  with an nftables masquerade out of its WAN and a firewall that drops every connection
  begun from outside (no port forwarded, as on a home router that has none), and a home
  namespace (``10.T.1i.2``) whose default route is that router;
* per home, an operator's console: a point-to-point veth from the root namespace
  (``10.T.10i.1`` ↔ ``10.T.10i.2``), the volunteer's own laptop, routed nowhere else.

Public namespaces have no default route: the only way in to a home is the way its NAT
lets replies through. Needs root and the ``ip`` and ``nft`` binaries (``usable`` says why
not). Everything is removed by ``destroy`` (namespaces and the bridge; veths go with them).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

NFT_HOME_ROUTER = """
table ip nat {
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        oifname "wan" masquerade
    }
}
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }
}
"""


_BUILDS = itertools.count()


def usable() -> str | None:
    """Why real NATs cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces and nftables need root"
    for binary in ("ip", "nft"):
        if shutil.which(binary) is None:
            return f"no {binary!r} binary (apt-get install iproute2 nftables)"
    return None


def run(*args: str, input_text: str | None = None) -> None:
    result = subprocess.run(args, input=input_text, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Topology:
    tag: int
    public: list[str] = field(default_factory=list)  # namespace names
    homes: list[str] = field(default_factory=list)
    routers: list[str] = field(default_factory=list)
    bridge: str = ""

    @property
    def net(self) -> str:
        return f"10.{self.tag}"

    @property
    def internet_host(self) -> str:
        """The root namespace's address on the internet (the fixture site listens here)."""
        return f"{self.net}.0.1"

    def public_ip(self, i: int) -> str:
        return f"{self.net}.0.{11 + i}"

    def router_ip(self, i: int) -> str:
        return f"{self.net}.0.{21 + i}"

    def home_ip(self, i: int) -> str:
        return f"{self.net}.{11 + i}.2"

    def console_ip(self, i: int) -> str:
        """Where the test (the volunteer's laptop) reaches home ``i``'s node."""
        return f"{self.net}.{101 + i}.2"

    @classmethod
    def build(cls, *, public: int, natted: int) -> Topology:
        # Another tag for each build of this process: a namespace's devices go with it
        # asynchronously, so a module's network may still be going as the next one's comes.
        tag = 20 + (os.getpid() + next(_BUILDS)) % 200
        topo = cls(tag=tag, bridge=f"rzb{tag}")
        try:
            topo._build(public, natted)
        except BaseException:
            topo.destroy()
            raise
        return topo

    def _build(self, public: int, natted: int) -> None:
        net, t = self.net, self.tag
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.internet_host}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for i in range(public):
            ns = f"rz{t}pub{i}"
            self._namespace(ns)
            self.public.append(ns)
            self._wire_to_bridge(f"rz{t}p{i}", ns, "eth0", self.public_ip(i))
        for i in range(natted):
            router, home = f"rz{t}nat{i}", f"rz{t}home{i}"
            self._namespace(router)
            self._namespace(home)
            self.routers.append(router)
            self.homes.append(home)
            self._wire_to_bridge(f"rz{t}n{i}", router, "wan", self.router_ip(i))
            run(
                "ip",
                "-n",
                router,
                "link",
                "add",
                "lan",
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                home,
            )
            run("ip", "-n", router, "addr", "add", f"{net}.{11 + i}.1/24", "dev", "lan")
            run("ip", "-n", router, "link", "set", "lan", "up")
            run("ip", "-n", home, "addr", "add", f"{self.home_ip(i)}/24", "dev", "eth0")
            run("ip", "-n", home, "link", "set", "eth0", "up")
            run("ip", "-n", home, "route", "add", "default", "via", f"{net}.{11 + i}.1")
            run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            run("ip", "netns", "exec", router, "nft", "-f", "-", input_text=NFT_HOME_ROUTER)
            console = f"rz{t}c{i}"
            run("ip", "link", "add", console, "type", "veth", "peer", "console", "netns", home)
            run("ip", "addr", "add", f"{net}.{101 + i}.1/30", "dev", console)
            run("ip", "link", "set", console, "up")
            run("ip", "-n", home, "addr", "add", f"{self.console_ip(i)}/30", "dev", "console")
            run("ip", "-n", home, "link", "set", "console", "up")

    @staticmethod
    def _namespace(ns: str) -> None:
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def _wire_to_bridge(self, outside: str, ns: str, inside: str, address: str) -> None:
        run("ip", "link", "add", outside, "type", "veth", "peer", inside, "netns", ns)
        run("ip", "link", "set", outside, "master", self.bridge, "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", inside)
        run("ip", "-n", ns, "link", "set", inside, "up")

    def destroy(self) -> None:
        for i in range(len(self.homes)):  # the consoles' root ends, not left to the kernel
            subprocess.run(
                ["ip", "link", "del", f"rz{self.tag}c{i}"], capture_output=True, timeout=30
            )
        for ns in [*self.public, *self.homes, *self.routers]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
