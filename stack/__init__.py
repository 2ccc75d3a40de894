"""The stack: local broker, topics, schemas and processors as supervised background processes."""
