"""Container images for the tests, built with podman and cached outside the checkout.

This machine has no registry: the Dockerfile's base (`FROM python:3.11-slim-bookworm`) is made
with debootstrap (Debian bookworm with its python3) and imported under that name, with an empty
/dev as the official images have (debootstrap leaves device nodes and a root-only /dev/shm there,
whose owner a volume mounted on /dev/shm would take). Builds reach the package index through
the host's network and its TLS proxy, whose certificate authority the build gets as a secret
(the Dockerfile mounts it for one step; it is never in a layer).

An image is tagged with a digest of everything that goes into it (the Dockerfile, the build
context's files, the build arguments), so a run whose inputs are unchanged reuses it, and
podman's own layer cache (in /var/lib/containers) rebuilds only the layers whose inputs
changed. Needs root, podman (runtime runc), debootstrap."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What the build context holds (.dockerignore's allow list).
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "fleet", "deploy/docker")
# Debian's python3 stands in for the official image's; venv and the OpenMP runtime come with it.
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,libgomp1,ca-certificates"
# What the rootfs tarball leaves out: the container runtime provides /dev.
ROOTFS_EXCLUDES = ("./dev/*",)
# The base's recipe: an imported base, and the images built on it, are made again when it changes.
BASE_RECIPE = hashlib.sha256(repr((DEBOOTSTRAP_PACKAGES, ROOTFS_EXCLUDES)).encode()).hexdigest()[:12]
BASE_LABEL = "fleet-tests.base-recipe"


def cache_dir() -> Path:
    base = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    path = base / "containers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    assert shutil.which("podman"), "the container tests need podman (apt-get install podman)"
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def _base_is_current() -> bool:
    if not image_exists(BASE_IMAGE):
        return False
    label = podman("image", "inspect", "--format", f'{{{{index .Labels "{BASE_LABEL}"}}}}',
                   BASE_IMAGE, check=False)
    return label.stdout.strip() == BASE_RECIPE


def base_image() -> str:
    """The Dockerfile's FROM, made with debootstrap once and imported under its name."""
    if _base_is_current():
        return BASE_IMAGE
    assert shutil.which("debootstrap"), "apt-get install debootstrap"
    rootfs = cache_dir() / "bookworm-rootfs"
    tarball = cache_dir() / f"bookworm-{BASE_RECIPE}.tar"
    if not tarball.exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}",
                        "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                       check=True, capture_output=True, timeout=1200)
        partial = tarball.with_suffix(".partial")
        excludes = [f"--exclude={pattern}" for pattern in ROOTFS_EXCLUDES]
        subprocess.run(["tar", "-C", str(rootfs), *excludes, "-cf", str(partial), "."],
                       check=True, timeout=600)
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
        for stale in cache_dir().glob("bookworm*.tar"):
            if stale != tarball:
                stale.unlink()
    podman("import", "--change", "CMD [\"python3\"]", "--change", f"LABEL {BASE_LABEL}={BASE_RECIPE}",
           str(tarball), BASE_IMAGE, timeout=600)
    return BASE_IMAGE


def inputs_digest(build_args: dict[str, str]) -> str:
    """A digest of every file the build reads, of its arguments and of the base's recipe."""
    digest = hashlib.sha256(BASE_RECIPE.encode())
    for arg in sorted(build_args.items()):
        digest.update(repr(arg).encode())
    for entry in CONTEXT:
        path = ROOT / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def image_name(build_args: dict[str, str]) -> str:
    return f"localhost/fleet-test:{inputs_digest(build_args)}"


def is_built(build_args: dict[str, str]) -> bool:
    """Whether `fleet_image` would find the image made already (and its base)."""
    return _base_is_current() and image_exists(image_name(build_args))


def fleet_image(build_args: dict[str, str], timeout: float = 1800) -> str:
    """Fleet's image for these build arguments, built unless one with the same inputs exists."""
    base_image()
    name = image_name(build_args)
    if image_exists(name):
        return name
    args = [f"--build-arg={key}={value}" for key, value in build_args.items()]
    # docker format: OCI images have no HEALTHCHECK.
    podman("build", "--format=docker", "--network=host",
           f"--secret=id=ca_bundle,src={CA_BUNDLE}", *args, "--target=runtime", "-t", name,
           str(ROOT), timeout=timeout)
    return name
