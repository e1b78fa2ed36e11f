"""The run directory: one owner for the paths a training run writes.

    RUN/config.json              the resolved TrainConfig
    RUN/config.yaml              the same, when the run's options came from a YAML file
    RUN/environment.json         versions and hardware
    RUN/metrics.jsonl            one object per finished epoch
    RUN/steps.jsonl              one object per logged step
    RUN/tensorboard/             events, when tensorboard is installed
    RUN/checkpoints/last.pt      where training stands (resume from it)
    RUN/checkpoints/best.pt      the epoch with the lowest validation error
    RUN/report.html              the HTML report
    RUN/.lock                    held by the run writing here

A new run never writes into a directory that holds another run, and two runs never
write into one directory at once: the second is refused, naming the first's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, atomic_write_json, owning_directory


class RunDir:
    """A run directory's paths, its creation, its lock (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        self._lock_fd: int | None = None

    config = property(lambda self: self.root / "config.json")
    config_yaml = property(lambda self: self.root / "config.yaml")
    environment = property(lambda self: self.root / "environment.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    steps = property(lambda self: self.root / "steps.jsonl")
    tensorboard = property(lambda self: self.root / "tensorboard")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")
    best = property(lambda self: self.root / "checkpoints" / "best.pt")
    report = property(lambda self: self.root / "report.html")

    def write_config(self, values: dict) -> None:
        """config.json, which --resume reads and --config takes; config.yaml beside it
        when the options came from a YAML file (`config`): the run's own config in the
        format it was given."""
        atomic_write_json(self.config, values)
        if str(values.get("config") or "").lower().endswith((".yaml", ".yml")):
            import yaml  # read the given file, so it is there

            text = yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
            atomic_write_bytes(self.config_yaml, text.encode())

    def holds_a_run(self) -> bool:
        """Whether another run already wrote here."""
        return any(p.exists() for p in (self.config, self.metrics, self.last, self.best))

    def stopped_before_a_checkpoint(self) -> bool:
        """Whether the run here was stopped before it wrote any checkpoint: nothing of
        it can be resumed, so running it again starts it afresh."""
        return self.holds_a_run() and not (self.last.exists() or self.best.exists())

    def best_or_last(self) -> Path:
        """best.pt when there is one, else last.pt."""
        return self.best if self.best.is_file() else self.last

    def create(self, say=None) -> None:
        """Make the directory for a new run; refuse one that holds another run. One that
        was stopped before its first checkpoint is started afresh (its lock taken first:
        a live run before its first checkpoint is not touched), and `say` is told so."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root} exists and is not a directory")
        if self.stopped_before_a_checkpoint():
            self.lock(say)
            self._clear_unstarted()
            if say is not None:
                say(f"{self.root}: its run stopped before its first checkpoint; starting it afresh")
            return
        if self.holds_a_run():
            raise UsageError(
                f"--out {self.root} already holds a run: continue it with "
                f"--resume {self.root}, or choose a new --out"
            )
        owner = owning_directory(self.root / "config.json")
        if owner:  # a run inside a store or another run would be taken for part of it
            raise UsageError(
                f"--out {self.root} is inside the {owner[0]} {owner[1]}: choose a folder outside it"
            )
        if self.root.is_dir() and any(self.root.iterdir()):  # a run starts in a new folder
            first = sorted(self.root.iterdir())[0]
            raise UsageError(
                f"--out {self.root} holds files of its own ({first.name}): a run writes "
                "into a new or empty folder; choose another --out"
            )
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the run directory {self.root}: {e.strerror}") from None

    def _clear_unstarted(self) -> None:
        """Remove what a run wrote before its first checkpoint (its config, logs and
        events), nothing else."""
        import shutil

        written = (self.config, self.config_yaml, self.environment, self.metrics, self.steps)
        for path in (*written, self.report):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
        self.remove_stale_temp_files()
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def check_resumable(self) -> None:
        """Raise UsageError unless there is a checkpoint to resume from."""
        if self.root.is_file():
            raise UsageError(
                f"--resume {self.root} is a file: --resume takes the run directory "
                "(train's --out); to start from a file's weights, use --weights"
            )
        if not self.root.is_dir():
            raise UsageError(f"--resume {self.root}: no such run directory")
        if not self.last.is_file():
            raise UsageError(
                f"--resume {self.root}: no checkpoint (checkpoints/last.pt) to resume from"
            )

    def lock(self, say=None) -> None:
        """Take the directory's lock for this process's lifetime: a POSIX record lock,
        which belongs to this process alone (a forked DataLoader worker does not inherit
        it, so a killed run's surviving workers never hold its directory) and which the
        system drops when the process dies. A .lock file still naming a pid is a run that
        ended without releasing it: taken over, and `say` is told so."""
        if self._lock_fd is not None:  # held already (create took it)
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(
                f"{self.root} is in use by another alexnet train (pid {holder}); "
                "wait for it or choose another --out"
            ) from None
        before = os.read(fd, 32).decode(errors="replace").strip()
        if before and say is not None:
            say(
                f"{self.root}: taking over the lock of pid {before}, which ended without releasing it"
            )
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the directory's lock, and remove its file: a finished run leaves no
        .lock naming a process that is gone (removed while still held, so no other
        process can hold the same file meanwhile)."""
        if self._lock_fd is not None:
            try:
                os.unlink(self.root / ".lock")
            except OSError:
                pass
            os.close(self._lock_fd)  # closing releases the record lock
            self._lock_fd = None

    def remove_stale_temp_files(self) -> None:
        """Temp files of a write that a kill cut short (atomic writes leave .NAME.*.tmp)."""
        for d in (self.root, self.checkpoints):
            for stray in d.glob(".*.tmp"):
                stray.unlink(missing_ok=True)
