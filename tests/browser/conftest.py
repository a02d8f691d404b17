# The real nats-server and the in-process cluster of tests/services.
from tests.services.conftest import cluster, nats_server

__all__ = ["cluster", "nats_server"]
