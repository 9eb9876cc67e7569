"""WUSTL-IIoT-2021 (Zolanvari et al.): Argus flows from an industrial control system testbed.

Five classes from `Traffic`. Timestamps, addresses, the source port and the IP identifiers are
"ignored": they mark when and between which hosts a flow ran, not how it behaved, so a model
would learn the capture schedule. `Proto` is a protocol number and stays numeric. There is no
official split: like WUSTL-EHMS, a stratified 80/20 split with a fixed seed of its own.
The full file (about 1.19 M rows) is not in the shared datasets; tests use a small fixture.
"""
from __future__ import annotations

from pathlib import Path

from ...edge_runtime.ingest.records import RawSchema
from .base import KEEP_ALL_FEATURES, Dataset, LabelledSet, split_set
from .files import find_data_file
from .tables import read_table

NAME = "wustl-iiot"
SUBDIR = "wustl-iiot-2021"
FILE = "wustl_iiot_2021.csv"
FEATURES = (
    "StartTime", "LastTime", "SrcAddr", "DstAddr", "Mean", "Sport", "Dport", "SrcPkts",
    "DstPkts", "TotPkts", "DstBytes", "SrcBytes", "TotBytes", "SrcLoad", "DstLoad", "Load",
    "SrcRate", "DstRate", "Rate", "SrcLoss", "DstLoss", "Loss", "pLoss", "SrcJitter",
    "DstJitter", "SIntPkt", "DIntPkt", "Proto", "Dur", "TcpRtt", "IdleTime", "Sum", "Min", "Max",
    "sDSb", "sTtl", "dTtl", "sIpId", "dIpId", "SAppBytes", "DAppBytes", "TotAppByte", "SynAck",
    "RunTime", "sTos", "SrcJitAct", "DstJitAct",
)
IGNORED = ("StartTime", "LastTime", "SrcAddr", "DstAddr", "Sport", "sIpId", "dIpId")
SCHEMA = RawSchema.of(FEATURES, ignored=IGNORED, trailing=("Traffic", "Target"))

CLASSES = ("Normal", "DoS", "Reconn", "CommInj", "Backdoor")
NORMAL = "Normal"
LABEL_CLASS = {"normal": 0, "DoS": 1, "Reconn": 2, "CommInj": 3, "Backdoor": 4}
SPLIT_SEED = 2021  # fixed: the same test records in every run, whatever the experiment seed
TEST_FRACTION = 0.2
FEATURE_DEFAULTS = KEEP_ALL_FEATURES


def load(data_dir=None) -> Dataset:
    """Find wustl_iiot_2021.csv (plain or .gz, in DIR or DIR/wustl-iiot-2021) and split it."""
    return from_file(find(data_dir))


def find(data_dir=None) -> Path:
    """The one file: its training and test sets are both carved from it."""
    return find_data_file(FILE, data_dir, subdir=SUBDIR)


def from_file(path: str | Path) -> Dataset:
    """The whole file, split into the fixed stratified train and test sets."""
    full = load_file(path)
    train, test = split_set(full, TEST_FRACTION, SPLIT_SEED)
    notes = (f"WUSTL-IIoT-2021 ({len(full.y):,} records from `{Path(path).name}`), five classes "
             f"from `Traffic`. No official split: a stratified {1 - TEST_FRACTION:.0%}/"
             f"{TEST_FRACTION:.0%} train/test split with the fixed seed {SPLIT_SEED} "
             f"({len(train.y):,} / {len(test.y):,} records, the same in every run). Not used as "
             f"features: {', '.join(IGNORED)} (when and between which hosts a flow ran); the "
             f"other {len(FEATURES) - len(IGNORED)} columns are all used, without feature "
             f"selection.")
    return Dataset(NAME, SCHEMA, CLASSES, NORMAL, train, {"test": test}, dict(FEATURE_DEFAULTS),
                   notes)


def load_file(path: str | Path, name: str | None = None) -> LabelledSet:
    """One file of the published layout; DataError names the file, line and column."""
    path = Path(path)
    return read_table(path, FEATURES + SCHEMA.trailing, SCHEMA, "Traffic", LABEL_CLASS,
                      name or path.name)
