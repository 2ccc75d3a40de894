"""The processor runtime: exactly-once consume-process-produce on confluent-kafka."""
