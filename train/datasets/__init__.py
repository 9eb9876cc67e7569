"""Dataset loaders. Each parses its raw files through edge_runtime.records, like the device."""
from .files import DATA_DIR_ENV, DataError, find_data_file

__all__ = ["DATA_DIR_ENV", "DataError", "find_data_file"]
