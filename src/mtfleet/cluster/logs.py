"""A job's log files, in its work dir: `logs/coordinator.log` and `logs/translator-<worker_id>.log`.

Actors run with `log_to_driver=False` (but under --verbose), so these files are where a user (or
the API, which serves them) reads what the coordinator and each translator did: leases,
completions, faults, deaths.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_BYTES = 4 * 1024 * 1024
LOG_BACKUPS = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


def log_path(work_dir: Path, name: str) -> Path:
    """`WORK/logs/NAME.log`: name is `coordinator` or `translator-<worker_id>`."""
    return Path(work_dir) / "logs" / f"{name}.log"


def log_to_work_dir(work_dir: Path, name: str) -> None:
    """Writes this process's mtfleet log records to `log_path(work_dir, name)`, rotated at
    LOG_BYTES with LOG_BACKUPS kept. A log that cannot be opened (a full disk) is skipped, with a
    warning on the process's stderr: logging never stops a job."""
    path = log_path(work_dir, name)
    package = logging.getLogger("mtfleet")
    package.setLevel(logging.INFO)
    if any(getattr(handler, "baseFilename", None) == str(path) for handler in package.handlers):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    except OSError as error:
        log.warning("cannot write the log %s: %s", path, error)
        return
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    package.addHandler(handler)


def stop_logging_to_work_dirs() -> None:
    """Closes this process's work-dir logs: a warm translator that takes another job logs there."""
    package = logging.getLogger("mtfleet")
    for handler in [h for h in package.handlers if isinstance(h, RotatingFileHandler)]:
        package.removeHandler(handler)
        handler.close()
