"""Test hosts on a real (virtual) network: a network namespace joined to this one by a veth pair.

What a cluster does on a network address (keys required, the launch policy, the Host check)
must be tested on one, and a CI machine may have none but loopback. A veth pair gives this
machine such an address (its end of the pair) and a second host behind it (the namespace).
Traffic stays inside the pair: nothing leaves the machine. Needs root and iproute2."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_COUNTER = itertools.count()


@contextmanager
def veth_host() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """Yields (this host's address on the pair, the other host's, the command prefix that runs
    a command on the other host); removes both ends afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (CI runs as root)")
    serial = next(_COUNTER)
    tag = f"{os.getpid() % 100000}x{serial}"
    namespace, here, there = f"fleet-{tag}", f"fa{tag}", f"fb{tag}"
    # One /24 per pair: the pid and the pair's serial keep concurrent test runs apart.
    subnet = f"10.{230 + serial % 20}.{os.getpid() % 250}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", namespace)
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", namespace)
        ip("addr", "add", f"{subnet}.1/24", "dev", here)
        ip("link", "set", here, "up")
        ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/24", "dev", there)
        ip("netns", "exec", namespace, "ip", "link", "set", there, "up")
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield f"{subnet}.1", f"{subnet}.2", ("ip", "netns", "exec", namespace)
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
