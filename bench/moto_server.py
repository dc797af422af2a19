"""moto's DynamoDB over real HTTP for the bench scripts: a ThreadedMotoServer on a free port and a
stock boto3 client pointed at it, with moto made to behave like DynamoDB under concurrency
(``tests.support.ledger_data.moto_dynamodb_like_aws``)."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from tests.support.ledger_data import moto_dynamodb_like_aws  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_dynamodb_client() -> Iterator[Any]:
    """A DynamoDB client talking HTTP to a fresh moto server, stopped on exit."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_dynamodb_like_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield boto3.session.Session(
                aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
            ).client("dynamodb", endpoint_url=f"http://{host}:{port}", config=Config(retries={"mode": "standard"}))
        finally:
            server.stop()
