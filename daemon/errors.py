"""The one root exception of regimed and its subclasses.

Every message names the offending key, file, row or value so that an operator can fix the
input without reading the code.
"""

from __future__ import annotations

from typing import Any


class RegimedError(Exception):
    """Root of every error regimed raises on purpose."""


class ConfigError(RegimedError, ValueError):
    """A configuration file or environment override is invalid (exit code 2)."""


class DataError(RegimedError, ValueError):
    """Input data (a CSV file, a bar) is malformed; the message names file, row and column."""


class UsageError(RegimedError, ValueError):
    """A command was called with arguments that do not fit together (exit code 2)."""


class StoreError(RegimedError):
    """The SQLite store cannot be opened, migrated, read or written; the message names the file."""


class ModelFitError(RegimedError, RuntimeError):
    """A base model could not be fitted; the message names the model and gives the library's
    reason. `model` holds the name, so a retrain can record which model failed."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model}: fit failed: {reason}")
        self.model = model
        self.reason = reason

    def __reduce__(self) -> tuple[type[ModelFitError], tuple[str, str]]:
        # Rebuilt from both arguments, so the error survives a trip between processes.
        return type(self), (self.model, self.reason)


class TrainingDataError(RegimedError, ValueError):
    """The stored samples cannot make a retrain (no live samples, or nothing left to train on
    after the time split); the message says what is missing."""


class ModelNotFoundError(StoreError, LookupError):
    """A model version that the registry does not hold; the message names the version."""


class ArtifactError(RegimedError):
    """A model artifact cannot be written, or is refused on reading (tampered, writable by
    others, a symlink, missing, or holding an untrusted type); the message names the file."""


class RelabelRefused(StoreError):
    """The stored live samples cannot be relabelled for the configured `label.target`; the
    message says why and what to do."""


class StoreBusyError(StoreError):
    """Another regimed daemon holds the store (its `<store>.lock`); the message names the store
    and the holder's pid."""


class ForeignStoreError(StoreError, ConfigError):
    """`store.path` names a file that is not a regimed store (an SQLite database with tables but
    no regimed migration record, or not an SQLite database at all); it is left untouched, and
    the command exits 2 like any other configuration error."""


class StoreCorruptError(StoreError):
    """The store failed its start-up integrity check (`PRAGMA quick_check`); the message names
    the file and the first problems SQLite found."""


class ListenError(ConfigError):
    """The metrics endpoint cannot listen on its address (the port is taken, or the host is not
    one of this machine's); the message names `metrics.host`/`metrics.port` (exit code 2)."""


class SamplingError(RegimedError, ValueError):
    """The sampler cannot meet its target (e.g. no row of any regime with a share)."""


class RetrainBusy(RegimedError, RuntimeError):
    """Another retrain holds the lock of this store."""


class RetrainAlreadyRun(RegimedError, RuntimeError):
    """The window this retrain serves was served already, by another daemon of the group or a
    command (daemon.training.window); nothing was trained. `run` is that run as a
    `retrain_runs` row of JSON values."""

    def __init__(self, message: str, run: dict[str, Any]) -> None:
        super().__init__(message)
        self.run = run


class ClusterError(RegimedError, RuntimeError):
    """The Dask cluster of `training.dask_scheduler` cannot fit the models (its scheduler is
    unreachable, it has no worker, or it lost the work); the message names the address."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"Dask scheduler {address} (training.dask_scheduler): {reason}")
        self.address = address
        self.reason = reason

    def __reduce__(self) -> tuple[type[ClusterError], tuple[str, str]]:
        return type(self), (self.address, self.reason)


class RetrainFailed(RegimedError, RuntimeError):
    """The retrain could not produce a candidate; the champion is kept. `report` says why."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class ArchiveError(RegimedError, RuntimeError):
    """The archive cannot be built from its source (e.g. Yahoo Finance is unreachable)."""


class DemoError(RegimedError, RuntimeError):
    """A step of the demo did not finish."""


class ReplayError(RegimedError, RuntimeError):
    """A bar source (Yahoo Finance) or the broker a replay publishes to failed."""


class BrokerError(RegimedError, RuntimeError):
    """The embedded broker could not be found or started."""


class DeadLetterError(RegimedError, RuntimeError):
    """A rejected record could not be written to the dead-letter topic."""


class ConsumerError(RegimedError):
    """The consumer cannot reach Kafka or cannot go on safely."""


class EventRejected(RegimedError, ValueError):
    """An event that does not fit the schema; `reason` is one of `consumers.events.REASONS`
    (a bounded set: it labels the `events_rejected_total` metric)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RetrainTerminated(BaseException):
    """SIGTERM arrived in the retrain process: unwind the retrain. A BaseException and no
    RegimedError, so that no `except Exception` (nor the trainer's `except RegimedError`)
    takes it for a failure of the run."""


class OutputError(RegimedError, RuntimeError):
    """Records for the output topics could not be published (the broker did not acknowledge
    them in time); they stay in the store's outbox and are sent again."""
