from __future__ import annotations

import os
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
    for forged in ("", "1000", "abc:def", "1000:" + "0" * 64, "1000:" + "0" * 32 + ":" + "0" * 64):
        assert not cluster_secret.check_timed_proof(secret, "address", forged, now=1000)
    assert cluster_secret.timed_proof(secret, "address", now=1000) != proof  # a nonce in each


def test_a_spent_proof_is_refused_again_while_it_would_verify():
    spent = cluster_secret.SpentProofs()
    proof = cluster_secret.timed_proof("s" * 32, "address", now=1000)
    assert spent.spend(proof, now=1000)
    assert not spent.spend(proof, now=1001)
    assert not spent.spend(proof, now=1000 + 2 * cluster_secret.PROOF_WINDOW_S - 1)
    assert spent.spend(cluster_secret.timed_proof("s" * 32, "address", now=1000), now=1001)
    # Forgotten once it could no longer verify, so the set stays small.
    spent.spend("another", now=1000 + 2 * cluster_secret.PROOF_WINDOW_S + 2)
    assert list(spent._expiry) == ["another"]


def test_a_worker_uses_the_secret_given_or_its_homes_and_never_makes_one(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    with pytest.raises(BadRequest, match="--cluster-secret or FLEET_CLUSTER_SECRET"):
        cluster_secret.for_worker()
    assert not cluster_secret.secret_path().exists()
    assert cluster_secret.for_worker("given-secret-0123456789") == "given-secret-0123456789"
    made = cluster_secret.load_or_create()  # a supervisor beside it, sharing FLEET_HOME
    assert cluster_secret.for_worker() == made


def test_install_gives_xoscar_a_derived_key_and_children_the_secret(monkeypatch):
    # Set through monkeypatch first, so that what install() writes is undone after the test.
    monkeypatch.setenv(cluster_secret.ENV_SECRET, "")
    monkeypatch.setenv(cluster_secret.ENV_XOSCAR_KEY, "")
    assert cluster_secret.from_environment() is None
    secret = "s" * 32
    cluster_secret.install(secret)
    assert cluster_secret.from_environment() == secret
    key = os.environ[cluster_secret.ENV_XOSCAR_KEY]
    assert key == cluster_secret.xoscar_key(secret) and secret not in key
    assert cluster_secret.xoscar_key("t" * 32) != key
