"""multi: a master/slave multiprocessor framework.

An application queues ``Slave_command`` objects on a ``Processor``; the processor runs them on
slaves over an interprocess communication fabric (``uni``, ``thread``, ``multiprocessing``,
``mpi4py`` ...) and brings their ``Result_command`` objects, their output and their exceptions
back to the master.
"""

from multi import joblib_hook
from multi.application import (
    Application_callback,
    Processor_box,
    fetch_data,
    fetch_data_store,
    load_multiprocessor,
    send_data_to_slaves,
)
from multi.capture import Redirect_text
from multi.commands import Exit_command, Slave_command, Slave_storage_command
from multi.errors import (
    BrokenProcessorError,
    Capturing_exception,
    CommandTimeoutError,
    FabricNotFoundError,
    FabricUnavailableError,
    MultiError,
    ProcessorSizeError,
    RemoteTraceback,
    SlaveDiedError,
    UnpicklableError,
    raise_unimplemented,
)
from multi.executor import Executor
from multi.memo import Memo
from multi.processor import Data_store, Processor
from multi.result_queue import Immediate_result_queue, Threaded_result_queue
from multi.results import (
    Batched_result_command,
    Null_result_command,
    Result_command,
    Result_exception,
    Result_string,
)
from multi.verbosity import Verbosity

__version__ = "0.1.0"

joblib_hook.install()

__all__ = [
    "Application_callback",
    "Batched_result_command",
    "BrokenProcessorError",
    "Capturing_exception",
    "CommandTimeoutError",
    "Data_store",
    "Executor",
    "Exit_command",
    "FabricNotFoundError",
    "FabricUnavailableError",
    "Immediate_result_queue",
    "Memo",
    "MultiError",
    "Null_result_command",
    "Processor",
    "ProcessorSizeError",
    "Processor_box",
    "Redirect_text",
    "RemoteTraceback",
    "Result_command",
    "Result_exception",
    "Result_string",
    "SlaveDiedError",
    "Slave_command",
    "Slave_storage_command",
    "Threaded_result_queue",
    "UnpicklableError",
    "Verbosity",
    "fetch_data",
    "fetch_data_store",
    "load_multiprocessor",
    "raise_unimplemented",
    "send_data_to_slaves",
]
