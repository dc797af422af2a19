"""The base of every operation adapter: check, send, meter; costguard's own errors contained."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from costguard.coerce import text_id, token_count
from costguard.errors import LedgerError, PolicyViolation
from costguard.meter import attempts
from costguard.meter.request import UNKNOWN_MODEL
from costguard.meter.streams import EventConsumer, MeteredStream, call_error_status
from costguard.trace import ModelCall

_UNANSWERED = frozenset({"usage_unknown", "estimated"})

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient
    from costguard.meter.request import RequestMeter


class Operation(ABC):
    """One metered boto3 method.

    Subclasses set ``service``, ``method`` (the boto3 name) and ``api_name``, and implement
    :meth:`prepare` (pre-call checks, returns the request's meter, the arguments to send and any
    state the response needs) and :meth:`meter_response`. The call itself, its failure and the
    containment of costguard's own errors are done here once for all operations.
    """

    service: ClassVar[str]
    method: ClassVar[str]
    api_name: ClassVar[str]

    def __call__(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> Any:
        guard = proxy.guard
        try:
            meter, send_kwargs, state = self.prepare(proxy, kwargs)
        except (PolicyViolation, LedgerError):
            raise
        except Exception as exc:  # noqa: BLE001 - costguard's own bug must not break the caller:
            # the call goes out unmetered, and the gap is counted and logged.
            guard.contain(f"{self.api_name} pre-call", exc)
            return getattr(proxy.unwrapped, self.method)(**kwargs)
        with attempts.tracking() as tried:
            try:
                response = getattr(proxy.unwrapped, self.method)(**send_kwargs)
            except BaseException as exc:
                if tried.unanswered:
                    self._settle_unanswered(meter, send_kwargs, tried.unanswered, final=True)
                else:
                    meter.finish(call_error_status(exc), write_usage=False)
                raise
        try:
            if tried.unanswered:
                self._settle_unanswered(meter, send_kwargs, tried.unanswered, final=False)
            return self.meter_response(meter, send_kwargs, state, response)
        except (PolicyViolation, LedgerError):
            raise
        except Exception as exc:  # noqa: BLE001 - see above: the response still reaches the caller
            guard.contain(f"{self.api_name} response", exc)
            if not meter.finished:
                meter.finish("ok")
            return response

    def unanswered_attempt(self, meter: RequestMeter, kwargs: dict[str, Any]) -> ModelCall:
        """What an attempt that was sent but never answered is settled at: the request's size
        as input tokens and its ``maxTokens`` (when it says) as output, flagged ``usage_unknown``."""
        config = kwargs.get("inferenceConfig")
        max_tokens = config.get("maxTokens") if isinstance(config, dict) else None
        output, _ = token_count(max_tokens)
        model = meter.requested_model or meter.policy.default_model or UNKNOWN_MODEL
        return ModelCall(model, "UNANSWERED", estimate_tokens(kwargs), output, usage_missing=True, flags=_UNANSWERED)

    def _settle_unanswered(self, meter: RequestMeter, kwargs: dict[str, Any], count: int, *, final: bool) -> None:
        steps = [self.unanswered_attempt(meter, kwargs) for _ in range(count)]
        if final:
            # Nothing else will come: the request ends here, with what the lost attempts cost.
            try:
                for step in steps:
                    meter.on_step(step)
            except PolicyViolation:
                pass  # recorded with the segment; the caller gets the AWS error it is owed
            meter.finish("error:unanswered")
        else:
            for step in steps:
                meter.on_step(step)

    @abstractmethod
    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        """See the class docstring."""

    @abstractmethod
    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        """See the class docstring."""


class ModelOperation(Operation):
    """A bedrock-runtime call on one ``modelId``: checked before it is sent, metered after."""

    service = "bedrock-runtime"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        model_id = text_id(kwargs.get("modelId")) or ""
        meter = proxy.start_request(self.api_name, model_id=model_id)
        # A Converse agent loop resends its tool calls: one repeated too often stops it here.
        meter.check_converse_repeats(kwargs.get("messages"))
        return meter, kwargs, model_id


class SingleResponseOperation(ModelOperation):
    """A model call answered in one response: its steps are metered and the request settled."""

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        meter.run_steps(self.steps(state, kwargs, response))
        return response

    @abstractmethod
    def steps(self, model_id: str, kwargs: dict[str, Any], response: Any) -> Iterable[object]:
        """See the class docstring."""


class StreamingOperation(ModelOperation):
    """A model call whose response member ``stream_key`` is an event stream."""

    stream_key: ClassVar[str]

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        response[self.stream_key] = MeteredStream(
            response[self.stream_key], meter, self.consumer(meter, state, kwargs, response)
        )
        return response

    @abstractmethod
    def consumer(self, meter: RequestMeter, model_id: str, kwargs: dict[str, Any], response: Any) -> EventConsumer:
        """See the class docstring."""


#: Characters per token for estimates when a response reports no usage: the rule of thumb AWS
#: gives for its models ("a token is about 4 characters" in the Bedrock pricing and quota docs).
CHARS_PER_TOKEN = 4


def estimate_tokens(*parts: Any) -> int:
    """A rough token count of request or response content (never 0 for non-empty content)."""
    total = 0
    for part in parts:
        if part is None:
            continue
        if isinstance(part, (bytes, bytearray)):
            total += len(part)
        elif isinstance(part, str):
            total += len(part.encode("utf-8", "replace"))
        else:
            total += len(json.dumps(part, default=str, ensure_ascii=False).encode("utf-8", "replace"))
    return -(-total // CHARS_PER_TOKEN)
