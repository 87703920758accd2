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
from typing import NamedTuple

import pytest

_COUNTER = itertools.count()


class VethHosts(NamedTuple):
    here: str  # this host's address on the pair
    there: str  # the other host's
    run_there: tuple[str, ...]  # the command prefix that runs a command on the other host
    link: str  # this host's end of the pair: set it down to cut the other host off


@contextmanager
def veth_host() -> Iterator[VethHosts]:
    """Makes the pair and the namespace; removes both ends afterwards."""
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
        yield VethHosts(f"{subnet}.1", f"{subnet}.2", ("ip", "netns", "exec", namespace), here)
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
