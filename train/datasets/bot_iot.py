"""Bot-IoT (Koroniotis et al. 2019), the 5 % subset in the "10-best features" layout.

Five classes from `category`. The record identifier, addresses and ports are "ignored": they
identify hosts rather than describe traffic (ports are also written in hex for some protocols).
The official files are not in the shared datasets; only a 999-row third-party sample is, which
`load_file` reads for smoke tests (it is TAB-separated with CRLF lines, read all the same).
"""
from __future__ import annotations

from pathlib import Path

from ...edge_runtime.ingest.records import RawSchema
from .base import KEEP_ALL_FEATURES, Dataset, LabelledSet
from .files import DataError, find_data_file
from .tables import read_table

NAME = "bot-iot"
SUBDIR = "bot-iot"
FILES = {"train": "UNSW_2018_IoT_Botnet_Final_10_best_Training.csv",
         "test": "UNSW_2018_IoT_Botnet_Final_10_best_Testing.csv"}
SOURCE = ("the UNSW Bot-IoT page, https://research.unsw.edu.au/projects/bot-iot-dataset "
          "(the 5% subset, 10-best features); bot-iot-sample/PROVENANCE.md in the shared "
          "datasets lists their sizes and SHA256")
IGNORED = ("pkSeqID", "saddr", "sport", "daddr", "dport")
CATEGORICAL = ("proto",)
BEST_10 = ("seq", "stddev", "N_IN_Conn_P_SrcIP", "min", "state_number", "mean",
           "N_IN_Conn_P_DstIP", "drate", "srate", "max")
FEATURES = ("pkSeqID", "proto", "saddr", "sport", "daddr", "dport") + BEST_10
SCHEMA = RawSchema.of(FEATURES, CATEGORICAL, IGNORED, trailing=("attack", "category",
                                                                   "subcategory"))

CLASSES = ("Normal", "DDoS", "DoS", "Reconnaissance", "Theft")
NORMAL = "Normal"
LABEL_CLASS = {c: i for i, c in enumerate(CLASSES)}
# The 10 best features were already selected by the dataset's authors: keep them all.
FEATURE_DEFAULTS = KEEP_ALL_FEATURES


def load(data_dir=None) -> Dataset:
    """The official training and testing files, in DIR or DIR/bot-iot, plain or .gz."""
    paths = find(data_dir)
    return from_files(paths["train"], paths["test"])


def find(data_dir=None) -> dict[str, Path]:
    """{"train": path, "test": path}; DataError saying where to get them."""
    try:
        return {part: find_data_file(f, data_dir, subdir=SUBDIR) for part, f in FILES.items()}
    except DataError as e:
        raise DataError(f"{e}. The official Bot-IoT files are not included; get "
                        f"{' and '.join(FILES.values())} from {SOURCE}") from None


def from_files(train_path: str | Path, test_path: str | Path) -> Dataset:
    """A dataset from a training and a testing file in this layout (the official split)."""
    train, test = load_file(train_path, "train"), load_file(test_path, "test")
    notes = (f"Bot-IoT, 5% subset in the 10-best-features layout, official split: trained on "
             f"`{Path(train_path).name}`, tested on `{Path(test_path).name}`; five classes from "
             f"`category`. Features: `proto` (one-hot) and the 10 best features; "
             f"{', '.join(IGNORED)} are not used (record id, addresses and ports identify "
             f"hosts).")
    return Dataset(NAME, SCHEMA, CLASSES, NORMAL, train, {"test": test}, dict(FEATURE_DEFAULTS),
                   notes)


def load_file(path: str | Path, name: str | None = None) -> LabelledSet:
    """One file of this layout (comma or TAB separated); DataError names the line and column."""
    path = Path(path)
    return read_table(path, SCHEMA.names + SCHEMA.trailing, SCHEMA, "category", LABEL_CLASS,
                      name or path.name)
