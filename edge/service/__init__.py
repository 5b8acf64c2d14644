"""The daemon: a supervisor running the pipeline (sources -> stages -> decision) and the
publisher (outbox -> MQTT)."""

from edge.service.supervisor import Service

__all__ = ["Service"]
