"""The one registry shape of elax: model families, datasets, baselines, transfer strategies, optimizers, schedules,
mask updates and run modes are each a `Registry` of named entries (`register`, `get`, `names`).

Extending elax is registering one entry from your own module; `get` of an unknown name says which names exist and
which one was probably meant.
"""

import difflib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that is not in a registry; the message lists the valid ones."""


class Registry(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind        # what an entry is, for messages: "baseline", "model family", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name` (replacing an entry of that name); returns `entry`, so that it can decorate."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} needs a non-empty string name, got {name!r}.")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Take the entry `name` out (an entry registered for a while, e.g. by a test)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry registered under `name`; UnknownName listing the valid names (and the nearest) otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name) -> str:
        """The message of an unknown `name`: 'unknown baseline 'rnadom' (did you mean 'random'?). Valid: ...'."""
        close = difflib.get_close_matches(str(name), self._entries, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}. Valid: {', '.join(self._entries) or 'none registered'}."

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
