"""User ids are keyed hashes by default, with a key kept beside the ledger.

Before (issue 12): user ids were stored verbatim unless a key was configured.
"""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import stat
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from costguard.errors import LedgerError
from costguard.identity import UserIdHasher
from costguard.ledger import SQLiteLedger
from costguard.ledger.dynamodb import DynamoDBLedger, create_table


def expected_ref(key: bytes, user: str) -> str:
    return "h:" + hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:32]


def test_hasher_output_is_h_colon_and_32_hex_of_hmac_sha256() -> None:
    hasher = UserIdHasher("team-secret")
    assert hasher.ref("alice@example.com") == expected_ref(b"team-secret", "alice@example.com")
    assert hasher.ref("alice@example.com") == "h:" + hmac.new(
        b"team-secret", b"alice@example.com", hashlib.sha256
    ).hexdigest()[:32]
    assert hasher.ref(None) is None and hasher.hashes
    raw = UserIdHasher(None)
    assert raw.ref("alice@example.com") == "alice@example.com" and not raw.hashes
    with pytest.raises(ValueError):
        UserIdHasher(b"")


def test_default_is_the_key_kept_beside_a_sqlite_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    key_file = tmp_path / "l.db.user-id-key"
    assert not key_file.exists()  # created on first use only

    hasher = UserIdHasher.configured(None, ledger)

    key = bytes.fromhex(key_file.read_text())
    assert len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert hasher.ref("alice") == expected_ref(key, "alice")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".user-id-key")] == []
    ledger.close()
    again = SQLiteLedger(tmp_path / "l.db")
    assert again.user_id_key() == key
    again.close()


def test_explicit_key_environment_and_raw_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    assert UserIdHasher.configured("explicit", ledger).ref("bob") == expected_ref(b"explicit", "bob")
    monkeypatch.setenv("COSTGUARD_USER_KEY", "from-env")
    assert UserIdHasher.configured(None, ledger).ref("bob") == expected_ref(b"from-env", "bob")
    assert UserIdHasher.configured(False, ledger).ref("bob") == "bob"
    assert not (tmp_path / "l.db.user-id-key").exists()  # no key was needed
    ledger.close()


def _key_of(path: str) -> str:
    ledger = SQLiteLedger(path)
    try:
        return ledger.user_id_key().hex()
    finally:
        ledger.close()


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    SQLiteLedger(path).close()
    with multiprocessing.get_context("fork").Pool(6) as pool:
        keys = pool.map(_key_of, [path] * 12)
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert (tmp_path / "l.db.user-id-key").read_text().strip() == keys[0]


def test_a_damaged_key_file_is_a_ledger_error_never_replaced(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    (tmp_path / "l.db.user-id-key").write_text("not hex\n")
    with pytest.raises(LedgerError, match="damaged"):
        ledger.user_id_key()
    assert (tmp_path / "l.db.user-id-key").read_text() == "not hex\n"
    ledger.close()


@pytest.fixture
def dynamodb() -> Iterator[object]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table("costguard-ledger", client=client)
        yield client


def test_dynamodb_hosts_share_one_key_created_once(dynamodb: object) -> None:
    first = DynamoDBLedger("costguard-ledger", client=dynamodb)
    second = DynamoDBLedger("costguard-ledger", client=dynamodb)
    key = first.user_id_key()
    assert len(key) == 32
    assert second.user_id_key() == key
    assert UserIdHasher.configured(None, second).ref("carol") == expected_ref(key, "carol")
    item = dynamodb.get_item(  # type: ignore[attr-defined]
        TableName="costguard-ledger", Key={"pk": {"S": "CONFIG"}, "sk": {"S": "user-id-key"}}
    )["Item"]
    assert item["key"]["B"] == key and set(item) == {"pk", "sk", "key"}
