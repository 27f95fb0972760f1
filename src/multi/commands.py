"""Slave commands: the units of work that the master queues and the slaves run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multi.errors import raise_unimplemented

if TYPE_CHECKING:
    from multi.memo import Memo
    from multi.processor import Processor


class Slave_command:
    """A piece of work run on a slave; subclasses carry their data and define ``run``.

    A command must pickle on fabrics whose slaves are other processes: keep what does not
    (open files, locks, bound methods of master objects) in a ``Memo`` on the master. On its
    slave, ``memo_id`` is the id of the memo it was queued with (None without one), which its
    batch carries for all its commands; a command that travels inside another holds its own
    where it holds more (else None: it was not queued).
    """

    memo_id: int | None = None

    def __init__(self) -> None:
        self.memo_id = None

    def run(self, processor: Processor, completed: bool) -> None:
        """Do the work on a slave; hand results back with ``processor.return_object``."""
        raise_unimplemented(self.run)

    def set_memo_id(self, memo: Memo | None) -> None:
        """Tie the command to a memo, which its results will receive on the master."""
        self.memo_id = memo.memo_id() if memo is not None else None


class Exit_command(Slave_command):
    """Ended a slave in the original framework. Here the processor starts and stops its slaves
    itself (``Processor.exit``), and refuses to queue this command, which would leave it short of
    a slave."""

    def run(self, processor: Processor, completed: bool) -> None:
        processor.return_object(processor.NULL_RESULT)


def data_name(name: object, identifier: bool = True) -> str:
    """``name``, if data can be stored under it in a slave's data store: a string that does
    not start with ``__``, as those name the store's own attributes (``__dict__`` wiped the
    store, ``__class__`` failed on every slave), and with ``identifier`` a Python identifier
    (what ``send_data_to_slaves`` has always asked; the original ``Slave_storage_command``
    stored under any other name)."""
    if (
        not isinstance(name, str)
        or name.startswith("__")
        or (identifier and not name.isidentifier())
    ):
        what = "a Python identifier" if identifier else "a string"
        raise ValueError(
            f"the name of the data must be {what} that does not start with '__' "
            f"(such as 'table' or 'vector'), not {name!r}"
        )
    return name


class Slave_storage_command(Slave_command):
    """Stores named values in the data store of the slave that runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.values: list[Any] = []

    def add(self, name: str, value: Any) -> None:
        """Add a value to store under ``name`` (see ``data_name``)."""
        self.names.append(data_name(name, identifier=False))
        self.values.append(value)

    def clear(self) -> None:
        """Forget every value added so far."""
        self.names = []
        self.values = []

    def run(self, processor: Processor, completed: bool) -> None:
        store = processor.data_store
        for name, value in zip(self.names, self.values, strict=True):
            setattr(store, name, value)
        processor.return_object(processor.NULL_RESULT)
