"""The KPIs processor: tasks, telemetry, halts and drills folded into KPI totals."""

from processors.kpis.processor import KpisProcessor

__all__ = ["KpisProcessor"]
