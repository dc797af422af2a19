"""The meter: ``Guard`` wraps boto3 Bedrock clients, counts every step and enforces the policies.

``guard.wrap(client, workflow=...)`` returns a :class:`GuardedClient` with the client's own
methods. Each metered method has an adapter in :mod:`costguard.meter.operations` (what is checked
before sending, where usage comes from, how it is priced); cost-bearing methods no adapter meters
follow the ``unmetered`` policy; everything else passes straight through.

Per request the meter checks the kill switch and the session's caps and reserves budget before
the call is sent, then follows the response event by event (:mod:`.request`, :mod:`.streams`). A
cap is checked on the event that crosses it; in ``enforce`` mode the stream is closed, usage so
far recorded and the matching :class:`~costguard.errors.PolicyViolation` raised. In ``shadow``
mode the violation is recorded with ``enforced: false`` and nothing is blocked.
"""

from __future__ import annotations

from costguard.meter.client import GuardedClient
from costguard.meter.guard import AgentModelResolver, Guard
from costguard.meter.request import Binding, GuardrailUsage, RequestMeter
from costguard.meter.streams import MeteredStream

__all__ = [
    "AgentModelResolver",
    "Binding",
    "Guard",
    "GuardedClient",
    "GuardrailUsage",
    "MeteredStream",
    "RequestMeter",
]
