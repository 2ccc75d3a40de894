"""Kafka adapters. This package alone builds client configurations (see :mod:`.config`)."""
