"""When a replica that does not answer its probes is called hung: a ready one after a few
misses in a row, one still loading only after a long silence (a busy machine can keep a loading
process from answering for seconds; killing it there failed good launches)."""

from __future__ import annotations

from fleet.cluster.worker.replica_watch import _Watched


def test_a_ready_replica_is_hung_after_its_misses_in_a_row(monkeypatch):
    monkeypatch.setenv("FLEET_HEALTH_PROBE_MISSES", "2")
    watched = _Watched("addr", "uid", ready=True, silent_since=100.0, misses=1)
    assert not watched.hung(now=104.0)
    watched.misses = 2
    assert watched.hung(now=107.0)


def test_a_loading_replica_is_given_its_grace(monkeypatch):
    monkeypatch.setenv("FLEET_LOADING_HANG_S", "30")
    watched = _Watched("addr", "uid", ready=False, silent_since=100.0, misses=5)
    assert not watched.hung(now=125.0)
    assert watched.hung(now=130.5)
    assert not _Watched("addr", "uid").hung(now=10_000.0)  # never silent: not hung


def test_a_stopped_process_gets_no_loading_grace(monkeypatch):
    monkeypatch.setenv("FLEET_HEALTH_PROBE_MISSES", "2")
    watched = _Watched("addr", "uid", ready=False, silent_since=100.0, misses=2)
    assert not watched.hung(now=107.0)
    assert watched.hung(now=107.0, stopped=True)


def test_a_sigstopped_process_is_seen_stopped():
    import os
    import signal
    import subprocess
    import sys
    import time

    from fleet.cluster.worker.replica_watch import _stopped

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not _stopped(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not _stopped(child.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert not _stopped(None)
