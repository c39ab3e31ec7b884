"""The pytest plugin installed with tracebridge (entry point ``pytest11``): the ``tracebridge_capture``
fixture. pytest loads it by itself; it imports nothing but tracebridge and starts nothing until a test
asks for the fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Captured, capture


@pytest.fixture
def tracebridge_capture() -> Iterator[Captured]:
    """Records events of level 3 and below into memory for the length of the test, nothing sampled out
    (see :func:`tracebridge.testing.capture`).

    .. versionadded:: 0.1
    """
    with capture() as captured:
        yield captured
