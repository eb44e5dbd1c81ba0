"""The integrators' documents, generated from the code: AsyncAPI, OpenAPI, JSON Schemas.

``reserves schemas export`` writes them under ``docs/`` and a test regenerates them in memory
and fails when the files drift from the code. The same AsyncAPI document is served at
``/asyncapi`` (HTML) and ``/asyncapi.json``.

FastStream builds the AsyncAPI document from the broker's subscribers (the real ones, from
``register_consumers``) and the publishers declared here for the topics the relay and the
consumers write. FastStream takes a subscriber's payload schema from its handler's signature;
ours take the raw message (so that bad JSON goes to the DLQ under our control), so their
payload schemas are filled in from the wire models below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import TypeAdapter

from handlers import wire
from handlers.kafka_consumers import register_consumers
from services import topics

TITLE = "Reserve exchange"
VERSION = "1"
DOC_BOOTSTRAP = "kafka:9092"  # docker-compose's broker; set KAFKA_BOOTSTRAP_SERVERS for yours
REF = "#/components/schemas/{model}"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


# Every wire message, in and out, by the file name of its JSON Schema under docs/schemas/.
WIRE_SCHEMAS: dict[str, Any] = {
    "erp.events": wire.ERP_MESSAGE,
    "reserve.commands": wire.COMMAND_MESSAGE,
    "reserve.command-results": wire.CommandResultMessage,
    "reserve.events": wire.ReserveEventMessage,
    "reserve.events.ReserveGiven.data": wire.ReserveGivenData,
    "order.status": wire.OrderStatusMessage,
    "http.erp-events.request": wire.ERP_MESSAGE,
    "http.erp-events.response": wire.ErpAccepted,
    "http.reserve-request.request": wire.RequestReserveBody,
    "http.give.request": wire.GiveBody,
    "http.decline.request": wire.DeclineBody,
    "http.cancel.request": wire.CancelBody,
    "http.command.response": wire.RequestAnswer,
    "http.stock.response": wire.StockView,
    "http.reserves.response": wire.ReservesView,
    "http.order.response": wire.OrderView,
    "http.reserve-request.response": wire.RequestView,
    "http.inbox.response": wire.InboxView,
    "http.error": wire.ErrorBody,
}

DLQ_DESCRIPTION = (
    "A message that could not be processed, unchanged (value and key as received), with the "
    "headers `error` (a human sentence) and `source` (`topic/partition/offset`). Its payload is "
    "whatever arrived on erp.events or reserve.commands."
)


def json_schema(annotation: Any, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    return TypeAdapter(annotation).json_schema(ref_template=ref_template)


def documentation_broker() -> KafkaBroker:
    """The service's subscribers and publishers, without connecting anywhere."""
    broker = KafkaBroker(DOC_BOOTSTRAP, description="Reserve exchange topics (the contract's "
                         "Kafka section). Values are JSON, UTF-8; every message carries a "
                         "`correlation_id` header.")
    register_consumers(broker, erp=cast(Any, None), commands=cast(Any, None),
                       managers=frozenset())
    broker.publisher(topics.COMMAND_RESULTS, schema=wire.CommandResultMessage,
                     title="reserve.command-results",
                     description="One answer per command on reserve.commands; key command_id.")
    broker.publisher(topics.RESERVE_EVENTS, schema=wire.ReserveEventMessage,
                     title="reserve.events",
                     description="Every stored domain event, in store order per aggregate, "
                                 "published by the relay after commit; key the aggregate id. "
                                 "At least once; dedupe on event_id.")
    broker.publisher(topics.ORDER_STATUS, schema=wire.OrderStatusMessage, title="order.status",
                     description="Once per change of an order's status; key order_id. "
                                 "At least once; dedupe on event_id.")
    broker.publisher(topics.DLQ, title="reserve.dlq", description=DLQ_DESCRIPTION)
    return broker


def asyncapi_document() -> dict[str, Any]:
    spec = AsyncAPI(documentation_broker(), title=TITLE, version=VERSION,
                    description="Kafka interface of the reserve exchange. See docs/ for the "
                                "ERP connector's and subscribers' guides.",
                    ).to_specification()
    doc: dict[str, Any] = spec.to_jsonable()
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    inputs = ((topics.ERP_EVENTS, wire.ERP_MESSAGE, "ErpEventsMessage"),
              (topics.COMMANDS, wire.COMMAND_MESSAGE, "ReserveCommandsMessage"))
    for topic, annotation, name in inputs:
        schema = json_schema(annotation, REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        for key, message in doc["components"].get("messages", {}).items():
            if key.startswith(f"{topic}:"):
                message["payload"] = {"$ref": REF.format(model=name)}
    schemas.pop("EmptyPayload", None)
    return doc


def schema_files() -> dict[str, str]:
    """Every generated document as ``{path under docs/: content}``."""
    from handlers.http_api import create_http_app

    files = {"asyncapi.json": _dump(asyncapi_document()),
             "openapi.json": _dump(create_http_app(cast(Any, None), console=False).openapi())}
    for name, annotation in WIRE_SCHEMAS.items():
        schema = json_schema(annotation)
        schema.setdefault("title", name)
        files[f"schemas/{name}.json"] = _dump({"$schema": JSON_SCHEMA_DIALECT, **schema})
    return files


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def export(docs_dir: Path) -> list[Path]:
    """Writes the documents; removes schema files no longer generated. Returns what it wrote."""
    written = []
    files = schema_files()
    for rel, content in files.items():
        path = docs_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    for stale in (docs_dir / "schemas").glob("*.json"):
        if f"schemas/{stale.name}" not in files:
            stale.unlink()
    return written


def drift(docs_dir: Path) -> list[str]:
    """The generated files that differ from (or are missing in, or extra in) ``docs_dir``."""
    files = schema_files()
    problems = [rel for rel, content in files.items()
                if not (docs_dir / rel).is_file()
                or (docs_dir / rel).read_text(encoding="utf-8") != content]
    problems += [f"schemas/{p.name} (no longer generated)"
                 for p in sorted((docs_dir / "schemas").glob("*.json"))
                 if f"schemas/{p.name}" not in files]
    return problems

