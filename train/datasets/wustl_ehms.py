"""WUSTL-EHMS-2020 (Hady et al. 2020): Argus flow metrics and patient biometrics, binary labels.

Two classes from `Label`, as in Dina et al. Some columns identify a flow instead of describing it;
they stay in the raw record (the device still reads the original layout) but are "ignored":
the addresses, MACs and source port single out the attacker's host, so the label leaks through
them; Packet_num is a running record number; Dir and Dport are constant. There is no official
split, so the loader makes a stratified 80/20 split with a fixed seed of its own.
"""
from __future__ import annotations

from pathlib import Path

from ...edge_runtime.ingest.records import RawSchema, open_input
from .base import KEEP_ALL_FEATURES, Dataset, LabelledSet, split_set
from .files import DataError, find_data_file
from .tables import read_table

NAME = "wustl-ehms"
NETWORK_NAME = "wustl-ehms-net"  # Argus columns only (load_network_only)
SUBDIR = "wustl-ehms-2020"
# The circulated copy (with `Attack Category`) first, then the WUSTL original.
FILES = ("wustl-ehms-2020_with_attacks_categories.csv", "wustl-ehms-2020.csv")
FEATURES = (
    "Dir", "Flgs", "SrcAddr", "DstAddr", "Sport", "Dport", "SrcBytes", "DstBytes", "SrcLoad",
    "DstLoad", "SrcGap", "DstGap", "SIntPkt", "DIntPkt", "SIntPktAct", "DIntPktAct", "SrcJitter",
    "DstJitter", "sMaxPktSz", "dMaxPktSz", "sMinPktSz", "dMinPktSz", "Dur", "Trans", "TotPkts",
    "TotBytes", "Load", "Loss", "pLoss", "pSrcLoss", "pDstLoss", "Rate", "SrcMac", "DstMac",
    "Packet_num", "Temp", "SpO2", "Pulse_Rate", "SYS", "DIA", "Heart_rate", "Resp_Rate", "ST",
)
LEAKING = ("SrcAddr", "DstAddr", "Sport", "SrcMac", "DstMac", "Packet_num")
CONSTANT = ("Dir", "Dport")
IGNORED = LEAKING + CONSTANT
CATEGORICAL = ("Flgs",)
# The patient's sensors, not Argus: the network-only variant ignores them.
BIOMETRIC = ("Temp", "SpO2", "Pulse_Rate", "SYS", "DIA", "Heart_rate", "Resp_Rate", "ST")
# Argus leaves a field empty (or prints nan) when it has nothing to measure: jitter of a
# one-packet flow, loss without retransmissions. The CSV has no empty field and 0 in every such
# column (SrcGap, SIntPktAct, Loss, pLoss are 0 in all 16,318 rows), so 0 is what they mean.
MISSING = ("", "nan", "-nan")
# Argus columns a flow model keeps beside its features, never read as features: when the flow
# started and ended (the time of its alerts and incidents, the order `learn` splits by) and
# its protocol (for alerts). The WUSTL CSV has none of them; a flow from `capture` has all.
FLOW_CONTEXT = ("StartTime", "LastTime", "Proto")
# What the device reads: the original layout, 43 features then `Label`.
SCHEMA = RawSchema.of(FEATURES, CATEGORICAL, IGNORED, trailing=("Label",), missing=MISSING)
# The circulated copy has `Attack Category` before `Label`.
SCHEMA_WITH_CATEGORY = RawSchema.of(FEATURES, CATEGORICAL, IGNORED,
                                    trailing=("Attack Category", "Label"), missing=MISSING)

CLASSES = ("Normal", "Attack")
NORMAL = "Normal"
LABEL_CLASS = {"0": 0, "1": 1}
SPLIT_SEED = 2020  # fixed: the same test records in every run, whatever the experiment seed
TEST_FRACTION = 0.2
# Dina et al. used every feature: no zero-ratio filter, no selection.
FEATURE_DEFAULTS = KEEP_ALL_FEATURES


def load(data_dir=None) -> Dataset:
    """Find the file (either name, plain or .gz, in DIR or DIR/wustl-ehms-2020) and split it."""
    return from_file(find(data_dir))


def find(data_dir=None) -> Path:
    """The one file: its training and test sets are both carved from it."""
    try:
        return find_data_file(FILES[0], data_dir, subdir=SUBDIR)
    except DataError as e:
        try:
            return find_data_file(FILES[1], data_dir, subdir=SUBDIR)
        except DataError:
            raise DataError(f"{e} (nor the original {FILES[1]})") from None


def network_schema(schema: RawSchema = SCHEMA) -> RawSchema:
    """The flow layout: the Argus columns of `schema` (the biometrics ignored) and, after
    them, FLOW_CONTEXT (ignored: times and protocol, kept for alerts and incidents)."""
    net = schema.reading(BIOMETRIC)
    return RawSchema(net.names + FLOW_CONTEXT, net.types + ("ignored",) * len(FLOW_CONTEXT),
                     net.trailing, net.missing, net.missing_as)


def load_network_only(data_dir=None) -> Dataset:
    """The same records and split, with the biometric columns ignored: a model for a device that
    sees only packets (Argus flows from `edge-ids capture`), with no medical sensors. Its
    layout adds the flows' times and protocol (FLOW_CONTEXT), which the CSV does not have and
    no feature reads."""
    full = load(data_dir)
    full.name = NETWORK_NAME
    full.schema = network_schema(full.schema)
    for labelled in (full.train, *full.tests.values()):
        labelled.records = labelled.records.without(BIOMETRIC)
    full.notes += (f" Network-only variant: the biometric columns ({', '.join(BIOMETRIC)}) are "
                   f"ignored too, leaving the {len(FEATURES) - len(IGNORED) - len(BIOMETRIC)} "
                   f"Argus flow columns.")
    return full


def from_file(path: str | Path) -> Dataset:
    """The whole file, split into the fixed stratified train and test sets."""
    full = load_file(path)
    train, test = split_set(full, TEST_FRACTION, SPLIT_SEED)
    schema = SCHEMA_WITH_CATEGORY if "Attack Category" in full.records.trailing else SCHEMA
    notes = (f"WUSTL-EHMS-2020 ({len(full.y):,} records from `{Path(path).name}`), two classes "
             f"from `Label`. No official split: a stratified {1 - TEST_FRACTION:.0%}/"
             f"{TEST_FRACTION:.0%} train/test split with the fixed seed {SPLIT_SEED} "
             f"({len(train.y):,} / {len(test.y):,} records, the same in every run). Not used as "
             f"features: {', '.join(LEAKING)} (they identify hosts and records, so the label "
             f"leaks through them) and the constant {' and '.join(CONSTANT)}; the other "
             f"{len(FEATURES) - len(IGNORED)} columns are all used, without feature selection "
             f"as in Dina et al.")
    return Dataset(NAME, schema, CLASSES, NORMAL, train, {"test": test}, dict(FEATURE_DEFAULTS),
                   notes)


def load_file(path: str | Path, name: str | None = None) -> LabelledSet:
    """Either layout, told apart by the header; DataError names the file, line and column."""
    path = Path(path)
    schema = _schema_of(path)
    return read_table(path, schema.names + schema.trailing, schema, "Label", LABEL_CLASS,
                      name or path.name)


def _schema_of(path: Path) -> RawSchema:
    try:
        with open_input(str(path)) as stream:
            header = stream.readline()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return SCHEMA_WITH_CATEGORY if b"Attack Category" in header else SCHEMA
