"""The contract's Kafka topics, and creating them at start."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)

ERP_EVENTS = "erp.events"
COMMANDS = "reserve.commands"
COMMAND_RESULTS = "reserve.command-results"
RESERVE_EVENTS = "reserve.events"
ORDER_STATUS = "order.status"
DLQ = "reserve.dlq"
ALL = (ERP_EVENTS, COMMANDS, COMMAND_RESULTS, RESERVE_EVENTS, ORDER_STATUS, DLQ)


async def ensure_topics(bootstrap_servers: str, partitions: int, replication_factor: int) -> None:
    """Creates whichever of the contract's topics are missing; existing ones are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in ALL if t not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(name=t, num_partitions=partitions, replication_factor=replication_factor)
                for t in missing
            ])
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()
