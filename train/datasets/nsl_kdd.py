"""NSL-KDD: the four official files (plain or .gz), five classes and the binary view.

Files have no header and 43 columns: 41 features, the attack label, the difficulty level.
Attack names that occur only in the test files are mapped as DESIGN.md lists them (note `worm`
is DoS there, where some papers count it as R2L). An unknown label is an error, never a drop.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...edge_runtime.ingest.records import RawSchema, open_input, parse_lines
from .base import Dataset, LabelledSet
from .files import DataError, find_data_file

NAME = "nsl-kdd"
FEATURES = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
CATEGORICAL = ("protocol_type", "service", "flag")
# What the device reads: the 41 features, optionally followed by label and difficulty.
SCHEMA = RawSchema.of(FEATURES, categorical=CATEGORICAL, trailing=("label", "difficulty"))
# What a labelled file must hold: all 43 columns (label and difficulty kept as text).
_FILE_SCHEMA = RawSchema(FEATURES + SCHEMA.trailing, SCHEMA.types + ("categorical",) * 2)

CLASSES = ("Normal", "DoS", "Probe", "R2L", "U2R")
NORMAL = "Normal"
_ATTACKS = {
    "DoS": "back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm worm",
    "Probe": "ipsweep nmap portsweep satan mscan saint",
    "R2L": "ftp_write guess_passwd imap multihop phf spy warezclient warezmaster httptunnel "
           "named sendmail snmpgetattack snmpguess xlock xsnoop",
    "U2R": "buffer_overflow loadmodule perl rootkit ps sqlattack xterm",
}
LABEL_CLASS = {"normal": NORMAL} | {a: c for c, names in _ATTACKS.items() for a in names.split()}

FILES = {"KDDTrain+": "KDDTrain+.txt", "KDDTrain+_20Percent": "KDDTrain+_20Percent.txt",
         "KDDTest+": "KDDTest+.txt", "KDDTest-21": "KDDTest-21.txt"}
TRAIN_SETS = ("KDDTrain+", "KDDTrain+_20Percent")
TEST_SETS = ("KDDTest+", "KDDTest-21")
# The CFLVAE paper's setup: zero-ratio filter on numeric features, then the 87 best by MI.
FEATURE_DEFAULTS = {"k": 87, "zero_ratio": 0.9, "zero_scope": "numeric"}


def dataset(data_dir=None, train_set: str | None = "KDDTrain+",
            tests: tuple[str, ...] = TEST_SETS) -> Dataset:
    """The official split: one training file, both test files. `train_set=None` with fewer
    `tests`: only those test files (what scoring a bundle needs); `train` is then None."""
    if train_set is not None and train_set not in TRAIN_SETS:
        raise DataError(f"unknown NSL-KDD training file {train_set!r}; choose from "
                        f"{', '.join(TRAIN_SETS)}")
    paths = files(data_dir, train_set, tests)  # all found before any is read
    notes = (f"NSL-KDD, official split: trained on {train_set}, tested on "
             f"{' and '.join(TEST_SETS)}. All 41 features are read; the difficulty level is not "
             f"used; attack names seen only in the test files are mapped to the five classes.")
    return Dataset(NAME, SCHEMA, CLASSES, NORMAL,
                   load_file(paths[train_set], train_set) if train_set else None,
                   {name: load_file(paths[name], name) for name in tests},
                   dict(FEATURE_DEFAULTS), notes)


def files(data_dir=None, train_set: str | None = "KDDTrain+",
          tests: tuple[str, ...] = TEST_SETS) -> dict[str, Path]:
    """Where the files of this split are (DataError naming the first one missing)."""
    names = ([train_set] if train_set else []) + list(tests)
    return {name: find_data_file(FILES[name], data_dir, subdir=NAME) for name in names}


def load(name: str, data_dir=None) -> LabelledSet:
    """Load one official file by name (see FILES); DataError names the file and line on trouble."""
    if name not in FILES:
        raise DataError(f"unknown NSL-KDD file {name!r}; choose from {', '.join(FILES)}")
    return load_file(find_data_file(FILES[name], data_dir, subdir=NAME), name)


def load_file(path: str | Path, name: str | None = None) -> LabelledSet:
    path = Path(path)
    try:
        with open_input(str(path)) as stream:
            lines = stream.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    records, rejected = parse_lines(lines, _FILE_SCHEMA)
    if rejected:
        first = rejected[0]
        more = f" (and {len(rejected) - 1} more bad lines)" if len(rejected) > 1 else ""
        raise DataError(f"{path}, line {first.record}: {_explain(first)}{more}")
    if not len(records):
        raise DataError(f"{path}: no records")
    # Label and difficulty go to `trailing`, as when the device parses a labelled file.
    records.trailing = {c: records.columns.pop(c) for c in SCHEMA.trailing}
    labels = records.trailing["label"]
    unknown = ~np.isin(labels, list(LABEL_CLASS))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(f"{path}, line {records.numbers[i]}: unknown attack label "
                        f"{str(labels[i])!r}; known labels: {', '.join(sorted(LABEL_CLASS))}")
    y = np.array([CLASSES.index(LABEL_CLASS[label]) for label in labels], dtype=np.int64)
    return LabelledSet(name or path.name, path, records, y)


def _explain(rejected) -> str:
    if rejected.reason == "wrong_field_count":
        return (f"wrong column count: {rejected.detail} "
                f"(41 features, the label and the difficulty level)")
    if rejected.reason == "non_numeric":
        return f"non-numeric value in {rejected.detail}"
    return f"{rejected.reason.replace('_', ' ')}: {rejected.detail}"
