"""The integrators' documents: generated from the code, and docs/ must hold exactly them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from handlers import wire
from handlers.http_api import create_http_app
from handlers.kafka_consumers import command_result
from handlers.outcome import Outcome, error_body
from services import contracts, topics
from tests.support import seed_facts

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_hold_exactly_the_documents_the_code_generates() -> None:
    problems = contracts.drift(DOCS)
    assert not problems, (
        "docs/ differs from the code in: " + ", ".join(problems)
        + ". Run `reserves schemas export` and commit the result.")


def test_drift_is_detected(tmp_path: Path) -> None:
    contracts.export(tmp_path)
    assert contracts.drift(tmp_path) == []
    (tmp_path / "schemas" / "order.status.json").write_text("{}\n")
    (tmp_path / "schemas" / "gone.json").write_text("{}\n")
    problems = contracts.drift(tmp_path)
    assert "schemas/order.status.json" in problems
    assert any(p.startswith("schemas/gone.json") for p in problems)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_documents_every_topic_of_the_contract_with_a_payload_schema() -> None:
    doc = contracts.asyncapi_document()
    addresses = {channel["address"]: key for key, channel in doc["channels"].items()}
    assert set(addresses) == set(topics.ALL)
    actions = {op["channel"]["$ref"].split("/")[-1]: op["action"]
               for op in doc["operations"].values()}
    assert actions[addresses[topics.ERP_EVENTS]] == "receive"
    assert actions[addresses[topics.ORDER_STATUS]] == "send"
    for topic in set(topics.ALL) - {topics.DLQ}:
        channel = doc["channels"][addresses[topic]]
        (message_ref,) = (m["$ref"] for m in channel["messages"].values())
        payload = _resolve(doc, message_ref)["payload"]
        schema = _resolve(doc, payload["$ref"])
        assert schema.get("properties") or schema.get("anyOf") or schema.get("oneOf"), topic


def test_the_asyncapi_input_schemas_accept_the_contracts_messages() -> None:
    batch = seed_facts("o1", "o2")
    TypeAdapter(wire.ERP_MESSAGE).validate_python(batch)
    TypeAdapter(wire.ERP_MESSAGE).validate_python(batch[0])
    TypeAdapter(wire.COMMAND_MESSAGE).validate_python(
        {"command_id": "c1", "type": "GiveReserve", "actor": "petrova",
         "data": {"request_id": "r1", "quantity": 3}})


def test_the_documented_result_shape_is_what_the_consumer_publishes() -> None:
    ok = command_result("c1", Outcome(201, {"request_id": "r", "status": "pending"}))
    refused = command_result("c2", Outcome(409, error_body("own_reserve", "no")))
    for message in (ok, refused):
        wire.CommandResultMessage.model_validate(message)


def test_openapi_declares_bodies_and_answers_of_every_route() -> None:
    doc = create_http_app(None, console=False).openapi()  # type: ignore[arg-type]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            success = {"get": "200", "post": "201" if path == "/v1/reserve-requests" else "200"}
            answer = op["responses"][success[method]]["content"]["application/json"]["schema"]
            assert answer["$ref"].split("/")[-1] in doc["components"]["schemas"], (path, method)
            assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"] \
                .endswith("/ErrorBody")
            if method == "post" and not path.endswith("/cancel"):
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.split("/")[-1] in doc["components"]["schemas"], path
    for name in ("/metrics", "/ready", "/health", "/asyncapi"):
        assert name not in doc["paths"]


def test_exported_schemas_are_json_schema_documents() -> None:
    for path in sorted((DOCS / "schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        assert schema["$schema"].startswith("https://json-schema.org/"), path.name
        assert "title" in schema


def test_the_schemas_command_checks_and_exports(tmp_path: Path) -> None:
    from services.cli import main

    assert main(["schemas", "check", "--docs", str(DOCS)]) == 0
    assert main(["schemas", "check", "--docs", str(tmp_path)]) == 1
    assert main(["schemas", "export", "--docs", str(tmp_path)]) == 0
    assert (tmp_path / "asyncapi.json").is_file() and (tmp_path / "openapi.json").is_file()
    assert main(["schemas", "check", "--docs", str(tmp_path)]) == 0
