"""moto's DynamoDB over real HTTP for the bench scripts: a ThreadedMotoServer on a free port and a
stock boto3 client pointed at it, with moto made to behave like DynamoDB under concurrency
(``tests.support.ledger_data.moto_dynamodb_endpoint``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from tests.support.ledger_data import moto_dynamodb_endpoint  # noqa: E402


@contextmanager
def moto_dynamodb_client() -> Iterator[Any]:
    """A DynamoDB client talking HTTP to a fresh moto server, stopped on exit."""
    with moto_dynamodb_endpoint() as url:
        yield boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).client("dynamodb", endpoint_url=url, config=Config(retries={"mode": "standard"}))
