from __future__ import annotations

import stat

import pytest

from fleet import cluster_secret
from fleet.errors import BadRequest


def test_created_once_private_and_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    first = cluster_secret.load_or_create()
    assert len(first) >= cluster_secret.MIN_LENGTH
    assert stat.S_IMODE(cluster_secret.secret_path().stat().st_mode) == 0o600
    assert cluster_secret.load_or_create() == first
    assert cluster_secret.load_or_create("given-secret-0123456789") == "given-secret-0123456789"


def test_a_short_secret_is_refused():
    with pytest.raises(BadRequest, match="at least 16"):
        cluster_secret.load_or_create("short")


def test_timed_proofs_hold_for_their_purpose_secret_and_window():
    secret = "s" * 32
    proof = cluster_secret.timed_proof(secret, "address", now=1000)
    assert cluster_secret.check_timed_proof(secret, "address", proof, now=1100)
    assert not cluster_secret.check_timed_proof(secret, "other", proof, now=1100)
    assert not cluster_secret.check_timed_proof("t" * 32, "address", proof, now=1100)
    assert not cluster_secret.check_timed_proof(secret, "address", proof, now=1000 + 301)
    for forged in ("", "1000", "abc:def", "1000:" + "0" * 64):
        assert not cluster_secret.check_timed_proof(secret, "address", forged, now=1000)
