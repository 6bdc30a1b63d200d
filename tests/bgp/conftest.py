"""The lab and podman fixtures. Without root, iproute2 or BIRD the suite is skipped, saying what
is missing, unless RRWATCH_REQUIRE_BGP is set (as `.ci/run` does), which makes a missing part a
failure; the same for the container tests' podman, runc and debootstrap with
RRWATCH_REQUIRE_CONTAINER."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.bgp import container
from tests.bgp.lab import Lab, bird1_dir, missing
from tests.support import require

# What each part the lab may lack is, and the Debian package that has it (root: none).
PARTS = {"root": ("root", None), "ip": ("`ip` (iproute2)", "iproute2"),
         "nft": ("`nft` (nftables)", "nftables"), "bird": ("BIRD 2 (`bird`)", "bird2"),
         "bird1": ("BIRD 1.6 (calico-node's) unpacked beside BIRD 2", None)}


def reason(lacking: list[str]) -> str:
    """One line: what the lab lacks, and how to get it."""
    hows = ["run as root"] if "root" in lacking else []
    if "bird1" in lacking:
        hows.append("run scripts/install-test-deps as root")
    if packages := [PARTS[part][1] for part in lacking if PARTS[part][1]]:
        hows.append("apt install " + " ".join(packages))
    return f"the BGP lab needs {', '.join(PARTS[part][0] for part in lacking)}: {'; '.join(hows)}"


@pytest.fixture
def bird16() -> str:
    """calico-node's `bird` (BIRD 1.6), for checks that need no lab: its parse check."""
    path = os.path.join(bird1_dir(), "bird")
    require(os.access(path, os.X_OK), reason(["bird1"]), "RRWATCH_REQUIRE_BGP")
    return path


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    lacking = missing()
    require(not lacking, reason(lacking), "RRWATCH_REQUIRE_BGP")
    with Lab(str(tmp_path / "lab")) as made:
        yield made


@pytest.fixture(scope="session")
def podman(tmp_path_factory) -> container.Podman:
    """podman, with rrwatch's RR host image built from this checkout (tests/bgp/container.py);
    without root, podman, runc or debootstrap a skip, or a failure under
    RRWATCH_REQUIRE_CONTAINER (set by `.ci/run`)."""
    lacking = container.missing()
    how = ("run as root; " if "root" in lacking else "") + "apt install podman runc debootstrap"
    require(not lacking, f"the container tests need {', '.join(lacking)}: {how}",
            "RRWATCH_REQUIRE_CONTAINER")
    made = container.Podman(tmp_path_factory.mktemp("podman"))
    made.base()
    made.build()
    size, base = made.size(container.IMAGE), made.size(container.BASE)
    print(f"\nrrwatch's RR host image: {size / 1e6:.0f} MB, {(size - base) / 1e6:.0f} MB over its "
          f"base; made in " + ", ".join(f"{what} {s:.0f} s" for what, s in made.built.items()))
    return made
