"""The lab fixture. Without root, iproute2 or BIRD the suite is skipped, unless
RRWATCH_REQUIRE_BGP is set (as `.ci/run` does), which makes a missing part a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.bgp.lab import Lab, missing


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    lacking = missing()
    if lacking:
        message = f"the BGP lab needs {', '.join(lacking)}"
        if os.environ.get("RRWATCH_REQUIRE_BGP"):
            pytest.fail(message)
        pytest.skip(message)
    with Lab(str(tmp_path / "lab")) as made:
        yield made
