"""Alert claims have a state and a lease; duplicates carry their key; publishes are short.

Before (issue 12): a run killed between claiming an alert and publishing it lost that alert for
good; a publish whose reply was lost sent it twice, indistinguishably; one publish with default
client timeouts could block for 180 s against the job's 30 s safety margin.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from costguard.alerts import (
    KEY_ATTRIBUTE,
    PUBLISH_WORST_CASE_MS,
    AlertPublisher,
    evaluate_alerts,
    sns_client_config,
)
from costguard.errors import LedgerError
from costguard.jobs import _before_deadline
from costguard.ledger import SQLiteLedger
from costguard.ledger.base import ALERT_CLAIM_LEASE_MS
from tests.unit.test_alerts import NOW, POLICIES, aws, received, sample_result

__all__ = ["aws"]  # the moto SNS + SQS fixture, re-used

AFTER_LEASE = NOW + timedelta(milliseconds=ALERT_CLAIM_LEASE_MS + 1)


class Killed(BaseException):
    """The runtime ending the invocation."""


class DyingLedger(SQLiteLedger):
    """The ledger as a dying run sees it: nothing can be written any more."""

    def release_alert_key(self, key: str) -> None:
        raise LedgerError("connection lost")

    def mark_alert_sent(self, key: str, now_ms: int) -> None:
        raise LedgerError("connection lost")


class SNS:
    """The moto SNS client, optionally killed before the call or losing the reply after it."""

    def __init__(self, client: Any, *, kill_before: bool = False, lose_reply: bool = False) -> None:
        self.client, self.kill_before, self.lose_reply = client, kill_before, lose_reply
        self.calls = 0

    def publish(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.kill_before:
            raise Killed("deadline")
        response = self.client.publish(**kwargs)
        if self.lose_reply:
            raise ReadTimeoutError(endpoint_url="https://sns.us-east-1.amazonaws.com/")
        return response


def publisher(ledger: SQLiteLedger, aws: dict[str, Any], client: Any, when: datetime) -> AlertPublisher:
    return AlertPublisher(ledger, aws["topic"], sns_client=client, clock=lambda: when)


def keys_of(notes: list[dict[str, Any]]) -> list[str]:
    return [n["MessageAttributes"][KEY_ATTRIBUTE]["Value"] for n in notes]


def test_a_run_killed_after_claiming_is_republished_after_the_lease(aws: dict[str, Any], tmp_path: Path) -> None:
    alert = evaluate_alerts(sample_result(), POLICIES)[0]
    with DyingLedger(tmp_path / "l.db") as dying:
        with pytest.raises(Killed):
            publisher(dying, aws, SNS(aws["sns"], kill_before=True), NOW).publish([alert])
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        (claim,) = ledger.alert_keys()
        assert (claim.key, claim.state, claim.lease_until_ms) == (
            alert.key, "claimed", int(NOW.timestamp() * 1000) + ALERT_CLAIM_LEASE_MS
        )
        # WHEN the next run comes while the lease still holds: nothing is sent twice
        early = publisher(ledger, aws, aws["sns"], NOW + timedelta(minutes=5)).publish([alert])
        assert (early.sent, early.republished, early.skipped_duplicates) == ([], [], [alert.key])
        # AND a run after the lease republishes it, even if that window is not evaluated again
        late = publisher(ledger, aws, aws["sns"], AFTER_LEASE).publish([])
        assert late.republished == [alert.key] and late.to_dict()["republished"] == 1
        assert [(k.key, k.state, k.lease_until_ms) for k in ledger.alert_keys()] == [(alert.key, "sent", None)]
        assert publisher(ledger, aws, aws["sns"], AFTER_LEASE + timedelta(hours=1)).publish([alert]).sent == []
    notes = received(aws)
    assert keys_of(notes) == [alert.key]
    assert json.loads(notes[0]["Message"]) == alert.message
    assert notes[0]["Subject"] == alert.subject


def test_a_lost_reply_is_sent_again_with_the_same_key_attribute(aws: dict[str, Any], tmp_path: Path) -> None:
    alert = evaluate_alerts(sample_result(), POLICIES)[0]
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        first = publisher(ledger, aws, SNS(aws["sns"], lose_reply=True), NOW).publish([alert])
        assert first.failed == [alert.key] and ledger.alert_keys() == []
        second = publisher(ledger, aws, aws["sns"], NOW + timedelta(hours=1)).publish([alert])
        assert second.sent == [alert.key]
    notes = received(aws)
    # SNS got it twice; a subscriber keeping the keys it has seen processes it once
    assert keys_of(notes) == [alert.key, alert.key]
    assert len({n["Message"] for n in notes}) == 1


def test_sent_but_not_marked_sent_is_republished_with_the_same_key(aws: dict[str, Any], tmp_path: Path) -> None:
    alert = evaluate_alerts(sample_result(), POLICIES)[0]
    with DyingLedger(tmp_path / "l.db") as dying:
        assert publisher(dying, aws, aws["sns"], NOW).publish([alert]).sent == [alert.key]
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        assert [k.state for k in ledger.alert_keys()] == ["claimed"]
        assert publisher(ledger, aws, aws["sns"], AFTER_LEASE).publish([alert]).republished == [alert.key]
    assert keys_of(received(aws)) == [alert.key, alert.key]


def test_sns_client_has_short_timeouts_and_two_attempts(aws: dict[str, Any], tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        config = AlertPublisher(ledger, aws["topic"], session=aws["session"]).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    # every attempt timing out, plus the backoff before the one retry: 16 s, not 180 s
    assert PUBLISH_WORST_CASE_MS == 2 * (2 + 5) * 1000 + 2_000


@pytest.fixture
def dropping_endpoint() -> Iterator[tuple[str, list[int]]]:
    """A local endpoint that accepts each connection and closes it without answering."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted[0] += 1
            conn.recv(65536)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()


def test_a_dead_endpoint_costs_two_attempts_then_the_alert_waits_for_next_run(
    tmp_path: Path, dropping_endpoint: tuple[str, list[int]]
) -> None:
    import boto3

    url, accepted = dropping_endpoint
    client = boto3.session.Session(region_name="us-east-1").client("sns", endpoint_url=url, config=sns_client_config())
    alert = evaluate_alerts(sample_result(), POLICIES)[0]
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        report = AlertPublisher(ledger, "arn:aws:sns:us-east-1:123456789012:alerts", sns_client=client,
                                clock=lambda: NOW).publish([alert])
        assert report.failed == [alert.key] and ledger.alert_keys() == []
    assert report.errors[alert.key].startswith(ConnectionClosedError.__name__)
    assert accepted[0] == 2


def test_the_deadline_is_checked_before_each_publish(aws: dict[str, Any], tmp_path: Path) -> None:
    alerts = evaluate_alerts(sample_result(), POLICIES)[:4]
    left = iter([60_000, PUBLISH_WORST_CASE_MS, PUBLISH_WORST_CASE_MS - 1, 10**9])
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        report = publisher(ledger, aws, aws["sns"], NOW).publish(
            alerts, should_stop=_before_deadline(None, lambda: next(left))
        )
        assert report.sent == [a.key for a in alerts[:2]]
        # once the deadline is near, nothing more is started, even if time seems to come back
        assert report.deferred == [a.key for a in alerts[2:]]
    assert keys_of(received(aws)) == [a.key for a in alerts[:2]]
