"""Where dataset files live, and the errors raised when they are missing or damaged.

Search order for a dataset's root folder (the folder that holds ``NMNIST/`` or ``SHD/``, the
layout tonic uses, so one download serves both libraries):

1. the ``root`` argument;
2. the per-dataset environment variable (``SPIKING_NMNIST_ROOT``, ``SPIKING_SHD_ROOT``);
3. ``SPIKING_DATA_ROOT``;
4. the per-user cache, :func:`cache_dir` (``$XDG_CACHE_HOME/spiking``, default ``~/.cache/spiking``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Environment variable naming one root shared by every dataset.
DATA_ROOT_ENV = "SPIKING_DATA_ROOT"


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing; the message lists them and the command that fetches them."""


class CorruptFileError(ValueError):
    """A dataset file exists but cannot be what it claims (partial download, wrong format).

    ``path`` is the offending file, ``reason`` what was wrong with it.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Skipped:
    """One file (or sample) left out under ``on_error="skip"``, with why."""

    path: str
    reason: str


def cache_dir() -> Path:
    """Per-user cache root: ``$XDG_CACHE_HOME/spiking`` or ``~/.cache/spiking`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not base.strip():
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spiking"


def resolve_root(root, env_var: str | None) -> tuple[Path, str]:
    """The root folder to use and a short word saying where it came from."""
    if root is not None:
        return Path(os.path.expanduser(str(root))), "argument"
    for var in (env_var, DATA_ROOT_ENV):
        if var and os.environ.get(var, "").strip():
            return Path(os.path.expanduser(os.environ[var])), f"${var}"
    return cache_dir(), "user cache"


def search_paths(env_var: str | None) -> list[str]:
    """Human-readable search order, for error messages and ``spiking data info``."""
    def show(var):
        return f"${var} ({os.environ[var]})" if os.environ.get(var) else f"${var} (unset)"

    out = ["root argument"]
    if env_var:
        out.append(show(env_var))
    out += [show(DATA_ROOT_ENV), f"user cache ({cache_dir()})"]
    return out


def check_on_error(on_error: str) -> str:
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
    return on_error


def missing_error(name: str, root: Path, origin: str, missing: list, env_var: str | None,
                  split: str | None = None) -> DatasetNotFoundError:
    """The error for absent files: what is expected, where we looked, how to get it."""
    split_arg = f" --split {split}" if split else ""
    lines = [f"{name} files not found under {root} (root from {origin}). Expected:"]
    lines += [f"  {p}" for p in missing]
    lines += [
        "Looked in, in order: " + "; ".join(search_paths(env_var)) + ".",
        "Get them with:",
        f"  spiking data download {name.lower()} --root {root}{split_arg}",
        f"or pass download=True, e.g. spiking.datasets.{name}(root={str(root)!r}, download=True).",
    ]
    return DatasetNotFoundError("\n".join(lines))


def report_skipped(name: str, skipped: list[Skipped]) -> None:
    """Warn once, listing what ``on_error="skip"`` left out."""
    if not skipped:
        return
    import warnings

    shown = "\n".join(f"  {s.path}: {s.reason}" for s in skipped[:20])
    more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    warnings.warn(f"{name}: skipped {len(skipped)} corrupt item(s):\n{shown}{more}", stacklevel=3)
