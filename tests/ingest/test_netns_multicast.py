"""WS-Discovery multicast for real: fake devices in network namespaces of their own, joined by
veth pairs to a bridge, answer our scanner's multicast Probe from another namespace.

Loopback cannot test multicast across hosts (the kernel short-circuits it), so the tests build
a small LAN: a hub namespace holding a bridge, one namespace per device and one for the
scanner, each with a veth into the bridge, addresses from TEST-NET-1 (192.0.2.0/24, never
routed). Namespace names carry our pid so parallel runs do not collide; they are deleted in
teardown whatever happened (which also removes the veths and the bridge). Creating them needs
root (CI runs as root); a test that cannot must fail, not skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NET = "192.0.2"
DEVICES = 3


@dataclass
class Lab:
    hub: str
    scanner: str
    scanner_ip: str
    devices: dict[str, str] = field(default_factory=dict)  # namespace -> address
    procs: list[subprocess.Popen[str]] = field(default_factory=list)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()} (these tests need root)")


def _attach(lab: Lab, ns: str, address: str, index: int) -> None:
    """Give `ns` an eth0 with `address`, its peer plugged into the hub's bridge."""
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{index}",
        "netns", lab.hub)  # fmt: skip
    _ip("-n", lab.hub, "link", "set", f"p{index}", "master", "br0", "up")
    _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"crg{os.getpid()}"
    lab = Lab(hub=f"{tag}h", scanner=f"{tag}s", scanner_ip=f"{NET}.2")
    made: list[str] = []
    try:
        _ip("netns", "add", lab.hub)
        made.append(lab.hub)
        _ip("-n", lab.hub, "link", "add", "br0", "type", "bridge")
        # No IGMP snooping: the bridge floods multicast like an unmanaged switch.
        _ip("-n", lab.hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", lab.hub, "link", "set", "br0", "up")
        made.append(lab.scanner)
        _attach(lab, lab.scanner, lab.scanner_ip, 0)
        for i in range(1, DEVICES + 1):
            ns, address = f"{tag}d{i}", f"{NET}.{10 + i}"
            made.append(ns)
            _attach(lab, ns, address, i)
            lab.devices[ns] = address
        for ns, address in lab.devices.items():
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.ingest.fake_fleet",
                 "--first", address, "--count", "1", "--udp-port", "3702", "--multicast"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            lab.procs.append(proc)
        for proc in lab.procs:  # each prints one line once it listens
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"fake device did not start (exit {proc.poll()})")
            assert json.loads(line)["devices"] == 1
        yield lab
    finally:
        for proc in lab.procs:
            if proc.stdin is not None:
                proc.stdin.close()  # the helper stops when its stdin closes
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _scan_in(ns: str, code: str) -> list[dict[str, object]]:
    """Run `code` (printing JSON lines) with our scanner inside namespace `ns`."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_multicast_probe_finds_every_device_on_the_segment(lab: Lab) -> None:
    code = f"""
import asyncio, json
from ingest.onvif.wsdiscovery import Discovery
async def main():
    async with Discovery() as d:
        found = await d.scan(interfaces=["{lab.scanner_ip}"], timeout=1.5)
    for f in found:
        print(json.dumps({{"address": f.address, "endpoint": f.endpoint, "xaddrs": f.xaddrs}}))
asyncio.run(main())
"""
    found = _scan_in(lab.scanner, code)
    assert sorted(str(f["address"]) for f in found) == sorted(lab.devices.values())
    assert len({f["endpoint"] for f in found}) == DEVICES


def test_multicast_discovery_interrogates_every_device(lab: Lab) -> None:
    """The whole pipeline from the scanner's namespace: multicast → ONVIF → device facts."""
    code = f"""
import asyncio, json
from ingest.onvif.discover import discover
async def main():
    report = await discover(interfaces=["{lab.scanner_ip}"], timeout=1.5,
                            username="admin", password="Secr3t!pass")
    for d in report.devices:
        print(json.dumps({{k: d[k] for k in ("address", "failure", "serial", "mac")}}
                         | {{"streams": [p["rtsp_uri"] for p in d["profiles"]]}}))
asyncio.run(main())
"""
    devices = _scan_in(lab.scanner, code)
    assert sorted(str(d["address"]) for d in devices) == sorted(lab.devices.values())
    for d in devices:
        assert d["failure"] is None, d
        assert d["serial"] == f"SN{d['address']}"
        streams = d["streams"]
        assert isinstance(streams, list) and len(streams) == 2
        assert all(str(s).startswith(f"rtsp://{d['address']}:554/") for s in streams)


def test_devices_answer_only_on_their_own_segment(lab: Lab) -> None:
    """A scanner alone in a namespace with no link to the bridge finds nothing (no leaks)."""
    lonely = f"{lab.hub[:-1]}x"
    _ip("netns", "add", lonely)
    try:
        # A veth whose peer stays in the same namespace: a cable to nowhere.
        _ip("-n", lonely, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        _ip("-n", lonely, "addr", "add", f"{NET}.99/24", "dev", "eth0")
        _ip("-n", lonely, "link", "set", "eth1", "up")
        _ip("-n", lonely, "link", "set", "eth0", "up", "multicast", "on")
        code = f"""
import asyncio
from ingest.onvif.wsdiscovery import Discovery
async def main():
    async with Discovery() as d:
        print(len(await d.scan(interfaces=["{NET}.99"], timeout=0.5)))
asyncio.run(main())
"""
        done = subprocess.run(
            ["ip", "netns", "exec", lonely, sys.executable, "-c", code],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "0"
    finally:
        subprocess.run(["ip", "netns", "del", lonely], capture_output=True, timeout=30)
