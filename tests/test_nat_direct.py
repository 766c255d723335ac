"""Direct paths to nodes behind NAT (issue #14): connection reversal and hole punching.

The network of ``tests/test_nat.py`` (3 public nodes, 2 behind two nftables masquerades
with no port forwarded), its own copy: ``pub2`` runs with ``--no-direct``. A public
querier gets a NATed owner's answers over a link the owner dialled back; the other NATed
node gets them over a TCP connection both homes opened at once through their NATs; in
both, the relay carries none of those answers' bytes. With direct paths off, or the punch
dropped by a router, the answers still come, through the relay. Tests run in file order:
the fourth blocks one home's router from the other's.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from rhizome.dht import Identity, Peer
from rhizome.federation.client import PeerClient
from rhizome.federation.direct import DirectLimits, DirectPaths
from rhizome.federation.direct_wire import (
    MAX_STREAM_FRAME,
    PATH_DIRECT_ATTACH,
    StreamSocket,
    direct_url,
    parse_addr,
    punch_message,
    read_frame,
    stream_frame,
)
from rhizome.federation.errors import RelayProtocolError
from rhizome.federation.relay_wire import (
    RelayedAnswer,
    attach_message,
    decode_request,
    encode_answer,
)
from rhizome.federation.settings import DEFAULT_SETTINGS
from tests.conftest import FixtureSite, NodeFactory, NodeHandle, serve_site
from tests.netns import Topology, usable
from tests.test_nat import Net, settled, start_network
from tests.test_network import network_search, network_status, wait_until

# Each query's top page, and the node behind NAT that crawled it (tests/test_nat.py SEEDS).
PAGES = {
    "Titan methane lakes": ("/moons.html", "home0"),
    "Pleiades open cluster": ("/nebulae.html", "home0"),
    "Perseid meteor shower": ("/comets.html", "home1"),
    "Jupiter Great Red Spot": ("/planets.html", "home1"),
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    if (why := usable()) is not None:
        pytest.skip(why)
    topo = Topology.build(public=3, natted=2)
    factory = NodeFactory(tmp_path_factory.mktemp("nat-direct"))
    try:
        with serve_site(host=topo.internet_host) as site:
            nodes = start_network(factory, topo, site, extra={"pub2": ("--no-direct",)})
            wait_until(lambda: settled(nodes), timeout=90, what="roles found, crawls published")
            yield Net(topo, site, factory, nodes)
    finally:
        factory.close()
        topo.destroy()


def direct(node: NodeHandle) -> dict[str, Any]:
    return dict(network_status(node)["direct"])


def relayed_bytes(net: Net, home: str) -> int:
    """What ``home``'s relay carried for it this hour (requests down, answers up)."""
    node_id = network_status(net.nodes[home])["node_id"]
    relay = net.nodes[net.name_of(network_status(net.nodes[home])["relay"]["relay"])]
    return int(network_status(relay)["relaying"]["bytes_this_hour"].get(node_id, 0))


def found_with_snippet(node: NodeHandle, site: FixtureSite, q: str) -> None:
    answer = network_search(node, q)
    assert answer["results"], (q, answer)
    top = answer["results"][0]
    assert top["url"] == site + PAGES[q][0], (q, answer)
    assert "<mark>" in top["content_html"], (q, top)  # the owner's own snippet
    assert answer["unresponsive_peers"] == [], (q, answer)


def test_a_public_node_gets_answers_from_behind_nat_over_a_reversed_connection(net: Net) -> None:
    querier, home = net.public["pub0"], net.homes["home0"]
    found_with_snippet(querier, net.site, "Titan methane lakes")  # opens the link
    opened = direct(querier)
    assert opened["counts"]["reversal_ok"] >= 1, opened  # home1 may be an owner asked too
    assert opened["counts"]["reversal_failed"] == 0, opened
    assert opened["links"] >= 1 and opened["peers_by_way"]["reversal"] >= 1, opened
    serving = direct(home)["serving"]
    assert serving["counts"]["reversed"] == 1, serving
    before = relayed_bytes(net, "home0")
    found_with_snippet(querier, net.site, "Pleiades open cluster")
    assert relayed_bytes(net, "home0") == before  # not one byte through the relay
    after = direct(querier)
    assert after["counts"]["direct_requests"] > opened["counts"]["direct_requests"], after
    again = direct(home)["serving"]
    assert again["counts"]["reversed"] == 1, again  # the link is kept, not opened again
    assert again["served"] > serving["served"], again
    # Anyone may read how peers were reached (counts, no ids), and /metrics says it too.
    public = querier.get_json("/api/status")["network"]["direct"]
    assert public["peers_direct"] >= 1, public
    metrics = querier.get("/metrics").text
    line = re.search(r'^rhizome_direct_events_total\{event="reversal_ok"\} (\S+)$', metrics, re.M)
    assert line is not None and float(line.group(1)) >= 1, metrics[-2000:]


def test_two_nodes_behind_nat_get_answers_over_a_punched_connection(net: Net) -> None:
    querier, home = net.homes["home1"], net.homes["home0"]
    found_with_snippet(querier, net.site, "Titan methane lakes")
    opened = direct(querier)
    assert opened["counts"]["punch_ok"] == 1, opened  # home0 is the only other NATed node
    assert opened["counts"]["punch_failed"] == 0, opened
    assert opened["peers_by_way"]["punch"] == 1, opened
    assert direct(home)["serving"]["counts"]["punched"] == 1
    before = relayed_bytes(net, "home0")
    found_with_snippet(querier, net.site, "Pleiades open cluster")
    assert relayed_bytes(net, "home0") == before
    after = direct(querier)
    assert after["counts"]["direct_requests"] > opened["counts"]["direct_requests"], after
    assert after["counts"]["punch_tried"] == 1  # the link is kept, not punched again


def test_with_direct_paths_off_answers_come_through_the_relay(net: Net) -> None:
    querier = net.public["pub2"]  # --no-direct
    before = relayed_bytes(net, "home1")
    found_with_snippet(querier, net.site, "Perseid meteor shower")
    assert relayed_bytes(net, "home1") > before
    off = direct(querier)
    assert off["enabled"] is False and off["links"] == 0, off
    assert off["counts"]["reversal_tried"] == off["counts"]["direct_requests"] == 0, off


def test_when_a_router_drops_the_punch_answers_come_through_the_relay(net: Net) -> None:
    """home0's router drops everything from home1's router (before its conntrack rules
    would let the punch's SYN-ACK in): the punch fails and the relay carries the answers."""
    router = net.topo.routers[0]
    block = (
        "table inet punchblock {\n"
        "  chain forward {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        f"    ip saddr {net.topo.router_ip(1)} drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", router, "nft", "-f", "-"], input=block, text=True, check=True
    )
    try:
        querier = net.homes["home0"]
        before = relayed_bytes(net, "home1")
        found_with_snippet(querier, net.site, "Perseid meteor shower")
        wait_until(
            lambda: direct(querier)["counts"]["punch_failed"] >= 1,
            timeout=10,
            what="the punch to give up",
        )
        found_with_snippet(querier, net.site, "Jupiter Great Red Spot")
        assert relayed_bytes(net, "home1") > before
        status = direct(querier)
        assert status["counts"]["punch_ok"] == 0 and status["counts"]["punch_tried"] == 1, status
        assert status["peers_by_way"]["relay"] >= 1, status
    finally:
        subprocess.run(
            ["ip", "netns", "exec", router, "nft", "delete", "table", "inet", "punchblock"],
            check=True,
        )


def test_a_public_node_takes_no_reversed_link_it_did_not_ask_for(net: Net) -> None:
    """A stranger that signs the handshake well is still refused: a querier relays for
    itself only, never for nodes that would use it as a free relay."""
    querier = net.public["pub0"]
    stranger = Identity.generate()

    async def attach() -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(querier.url + PATH_DIRECT_ATTACH) as ws:
                nonce = bytes.fromhex((await ws.receive_json())["nonce"])
                own = network_status(querier)["reachability_check"]["advertised_url"]
                url = direct_url(own, stranger.node_id.hex())
                await ws.send_json(
                    {
                        "node_id": stranger.node_id.hex(),
                        "public_key": stranger.public_key.hex(),
                        "signature": stranger.sign(attach_message(nonce, url)).hex(),
                        "url": url,
                    }
                )
                return await ws.receive_json()

    answer = asyncio.run(attach())
    assert answer["ok"] is False, answer
    assert "asked" in answer["error"], answer


def test_a_punched_peer_must_sign_the_nonce_with_the_key_of_the_node_asked() -> None:
    me, owner, impostor = Identity.generate(), Identity.generate(), Identity.generate()
    paths = DirectPaths(
        identity=me,
        client=PeerClient(DEFAULT_SETTINGS, allow_private=True, distrusted=lambda: ()),
        limits=DirectLimits(),
        public_url=lambda: None,
        observed_ip=lambda: None,
    )
    nonce = bytes(16)
    peer = Peer(owner.node_id, "", 0, "http://relay/api/peer/relay/x")

    def proof(signer: Identity, message: bytes) -> bytes:
        return orjson.dumps(
            {"public_key": signer.public_key.hex(), "signature": signer.sign(message).hex()}
        )

    paths._check_proof(proof(owner, punch_message(nonce, me.node_id)), peer, nonce)
    for bad in (
        proof(impostor, punch_message(nonce, me.node_id)),  # someone else at that address
        proof(owner, punch_message(bytes(range(16)), me.node_id)),  # another punch's nonce
        proof(owner, punch_message(nonce, impostor.node_id)),  # made for another querier
        b"not json",
    ):
        with pytest.raises(RelayProtocolError):
            paths._check_proof(bad, peer, nonce)


def test_punch_addresses_and_stream_frames_are_bounded() -> None:
    assert parse_addr("10.0.0.21:40001") == ("10.0.0.21", 40001)
    assert parse_addr("[2001:db8::1]:443") == ("2001:db8::1", 443)
    for bad in ("10.0.0.21", "host:80", "10.0.0.21:0", "10.0.0.21:70000", "1.2.3.4:8x", ""):
        with pytest.raises(RelayProtocolError):
            parse_addr(bad)

    async def read(data: bytes, limit: int) -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, limit)

    assert asyncio.run(read(stream_frame(b"abc"), 3)) == b"abc"
    with pytest.raises(RelayProtocolError):  # refused by its length, before it is read
        asyncio.run(read(stream_frame(b"abcd"), 3))
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(read(stream_frame(b"abc")[:-1], 3))


def test_a_punched_link_carries_requests_and_is_closed_when_unused() -> None:
    """The querier's end of a punched link over a real socket pair: a request goes down
    as a frame and its answer comes back; unused for ``idle_seconds`` the link is closed,
    so the next request goes by the relay (or opens a new link)."""
    me = Identity.generate()
    paths = DirectPaths(
        identity=me,
        client=PeerClient(DEFAULT_SETTINGS, allow_private=True, distrusted=lambda: ()),
        limits=DirectLimits(idle_seconds=0.5),
        public_url=lambda: None,
        observed_ip=lambda: None,
    )
    node = "ab" * 20

    async def main() -> None:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        node_reader, node_writer = await asyncio.open_connection(sock=theirs)
        session = paths.hub.attach(node, StreamSocket(writer))
        carrying = asyncio.create_task(paths._carry(session, reader, writer))

        async def owner() -> None:  # the node behind NAT, as its frames say it
            request = decode_request(await read_frame(node_reader, MAX_STREAM_FRAME))
            answer = RelayedAnswer(request.id, 200, "application/json", "", b'{"ok": 1}')
            node_writer.write(stream_frame(encode_answer(answer)))
            await node_writer.drain()

        answering = asyncio.create_task(owner())
        answer = await paths.hub.forward(node, "/api/peer/search?q=x", "gzip")
        await answering
        assert (answer.status, answer.body) == (200, b'{"ok": 1}')
        assert paths.hub.attached(node) is session
        await asyncio.wait_for(carrying, 2.0)  # idle: closed by itself
        assert paths.hub.attached(node) is None
        assert await node_reader.read() == b""  # the node sees its end closed
        node_writer.close()

    asyncio.run(main())
