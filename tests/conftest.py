from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_writer_outlives_its_test() -> Iterator[None]:
    """A Guard a test left open must not write into the next test's ledger or moto state: its
    background writer is stopped (what it still held is dropped) when the test ends."""
    yield
    from costguard.meter.writer import _WRITERS

    for writer in list(_WRITERS):
        writer.abandon()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may touch real AWS credentials or the user's own ledger and price overrides."""
    home = tmp_path_factory.mktemp("costguard-home")
    monkeypatch.setenv("COSTGUARD_HOME", str(home))
    monkeypatch.delenv("COSTGUARD_LEDGER", raising=False)
    monkeypatch.delenv("COSTGUARD_PRICING", raising=False)
    monkeypatch.delenv("COSTGUARD_USER_KEY", raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def fake() -> Iterator[object]:
    from tests.support.wire import FakeBedrock

    with FakeBedrock() as server:
        yield server
        # A request nothing was scripted for means the test exercised something else than it
        # meant to (a retry, a rewritten path): fail loudly instead of passing on an accident.
        assert not server.unscripted, f"unscripted requests reached the endpoint: {server.unscripted}"
