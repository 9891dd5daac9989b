"""Model versions and the champion, their artifacts, and loading the champion for serving; this
package hands on the public names of the registry."""

from __future__ import annotations

from daemon.registry.records import ModelRecord, ModelStatus, Promotion, RetrainRun
from daemon.registry.versions import AlertSink, Registry

__all__ = ["AlertSink", "ModelRecord", "ModelStatus", "Promotion", "Registry", "RetrainRun"]
