"""The dataset loaders: one contract every loader keeps, then what is special to each, and the
errors bad files give (each names the file, the line and the column)."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.train.datasets import (DATASETS, DataError, bot_iot, load_dataset, wustl_ehms,
                                     wustl_iiot)
from edge_ids.train.feature_spec import fit_feature_spec
from conftest import DATA_DIR
from iiot_sample import iiot_sample

EHMS_FILE = DATA_DIR / "wustl-ehms-2020" / "wustl-ehms-2020_with_attacks_categories.csv.gz"
BOT_IOT_SAMPLE = DATA_DIR / "bot-iot-sample" / "bot_iot_sample.csv"
# Made up to the published WUSTL-IIoT-2021 column list, written at test time: NOT real data.
IIOT_FIXTURE = iiot_sample()


def _needs(path):
    if not path.is_file():
        pytest.skip(f"{path} not found: put the shared datasets beside the repository or set "
                    f"EDGE_IDS_DATA_DIR")


def _nsl_kdd():
    return load_dataset("nsl-kdd", DATA_DIR, train_set="KDDTrain+_20Percent")


def _ehms():
    _needs(EHMS_FILE)
    return load_dataset("wustl-ehms", DATA_DIR)


def _ehms_net():
    _needs(EHMS_FILE)
    return load_dataset("wustl-ehms-net", DATA_DIR)


def _bot_iot_sample():
    _needs(BOT_IOT_SAMPLE)
    return bot_iot.from_files(BOT_IOT_SAMPLE, BOT_IOT_SAMPLE)  # smoke test: no official files


def _iiot_fixture():
    return wustl_iiot.from_file(IIOT_FIXTURE)


LOADERS = {"nsl-kdd": _nsl_kdd, "wustl-ehms": _ehms, "wustl-ehms-net": _ehms_net,
           "bot-iot-sample": _bot_iot_sample, "wustl-iiot-fixture": _iiot_fixture}


@pytest.fixture(scope="module", params=list(LOADERS))
def dataset(request):
    if request.param != "wustl-iiot-fixture":
        request.getfixturevalue("data_dir")  # skips when the shared datasets are absent
    return LOADERS[request.param]()


@pytest.fixture(scope="module")
def ehms(data_dir):
    return _ehms()


def test_every_loader_keeps_the_contract(dataset):
    d = dataset
    assert d.normal in d.classes and d.notes and set(d.feature_defaults) == {
        "k", "zero_ratio", "zero_scope"}
    assert list(d.tests)
    read = set(d.schema.numeric) | set(d.schema.categorical)
    for s in (d.train, *d.tests.values()):
        assert s.y.dtype == np.int64 and len(s.y) == len(s.records) > 0
        assert s.y.min() >= 0 and s.y.max() < len(d.classes)
        assert d.classes[s.normal_index] == d.normal
        assert set(s.records.columns) == read and not read & set(d.schema.ignored)
        assert set(s.records.trailing) == set(d.schema.trailing)
        assert all(np.isfinite(s.records.columns[c]).all() for c in d.schema.numeric)
        assert np.all(np.diff(s.records.numbers) > 0)  # file order, each line once
    assert RawSchema.from_spec(json.loads(json.dumps(d.schema.to_spec()))) == d.schema


def test_feature_spec_fits_and_scales_to_unit_range(dataset):
    d = dataset
    spec = fit_feature_spec(d.train.records, d.train.y, d.schema, mi_sample=2000,
                            **d.feature_defaults)
    assert not {f["column"] for f in spec["kept"]} & set(d.schema.ignored)
    transform = FeatureTransform(json.loads(json.dumps(spec)))
    for s in (d.train, *d.tests.values()):
        x, _ = transform.transform(s.records.columns)
        assert x.shape == (len(s.y), transform.n_inputs)
        assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


# --- WUSTL-EHMS-2020 -------------------------------------------------------------------------

def test_ehms_class_counts_and_fixed_split(ehms):
    full = wustl_ehms.load_file(EHMS_FILE)
    assert np.bincount(full.y).tolist() == [14_272, 2_046]
    train, test = ehms.train, ehms.tests["test"]
    assert list(ehms.tests) == ["test"] and len(train.y) + len(test.y) == 16_318
    assert len(test.y) == pytest.approx(0.2 * 16_318, abs=2)
    assert abs(train.y.mean() - test.y.mean()) < 0.005  # stratified
    assert not set(train.records.numbers) & set(test.records.numbers)
    assert set(train.records.numbers) | set(test.records.numbers) == set(full.records.numbers)
    again = wustl_ehms.load(DATA_DIR)  # a new call, the same split
    np.testing.assert_array_equal(again.tests["test"].records.numbers, test.records.numbers)
    assert set(ehms.train.labels) == {"0", "1"}


def test_ehms_dropped_columns_are_constant_or_identifiers(ehms):
    import pandas as pd

    raw = pd.read_csv(EHMS_FILE, dtype=str, keep_default_na=False)
    assert {c: raw[c].nunique() for c in wustl_ehms.CONSTANT} == {"Dir": 1, "Dport": 1}
    assert raw["Packet_num"].nunique() > 16_000  # a running number, nearly one per record
    assert ehms.schema.ignored == [c for c in wustl_ehms.FEATURES if c in wustl_ehms.IGNORED]
    spec = fit_feature_spec(ehms.train.records, ehms.train.y, ehms.schema, mi_sample=2000,
                            **ehms.feature_defaults)
    assert not {f["column"] for f in spec["kept"]} & set(wustl_ehms.IGNORED)
    flags = len(set(ehms.train.records.columns["Flgs"]))
    assert len(spec["selected"]) == len(spec["kept"]) == 34 + flags  # k=None keeps them all


def test_the_network_only_variant_reads_the_argus_columns_of_the_same_records(ehms):
    net = load_dataset("wustl-ehms-net", DATA_DIR)
    assert net.name == "wustl-ehms-net"
    assert net.schema.names == ehms.schema.names + wustl_ehms.FLOW_CONTEXT
    assert set(net.schema.ignored) == set(wustl_ehms.IGNORED) | set(wustl_ehms.BIOMETRIC) | \
        set(wustl_ehms.FLOW_CONTEXT)
    for name in ("train", "test"):
        a, b = (ehms.train, net.train) if name == "train" else (ehms.tests["test"],
                                                                net.tests["test"])
        np.testing.assert_array_equal(a.records.numbers, b.records.numbers)  # the same split
    spec = fit_feature_spec(net.train.records, net.train.y, net.schema, mi_sample=2000,
                            **net.feature_defaults)
    kept = {f["column"] for f in spec["kept"]}
    assert not kept & set(wustl_ehms.BIOMETRIC) and {"SrcJitter", "Flgs", "Rate"} <= kept
    assert spec["raw"]["missing"] == {"values": ["", "nan", "-nan"], "as": 0.0}
    assert "biometric columns" in net.notes


def test_ehms_host_parse_equals_device_parse(ehms):
    """The device reads the same file through records.parse_lines: identical columns."""
    with gzip.open(EHMS_FILE, "rb") as f:
        lines = f.read().splitlines()
    records, rejected = parse_lines(lines[1:], ehms.schema, first_number=2)
    host = wustl_ehms.load_file(EHMS_FILE).records
    assert not rejected
    np.testing.assert_array_equal(records.numbers, host.numbers)
    for name, values in (records.columns | records.trailing).items():
        np.testing.assert_array_equal(values, (host.columns | host.trailing)[name], err_msg=name)


# --- Bot-IoT and WUSTL-IIoT-2021 -------------------------------------------------------------

def test_bot_iot_sample_counts():
    _needs(BOT_IOT_SAMPLE)
    s = bot_iot.load_file(BOT_IOT_SAMPLE)
    counts = dict(zip(bot_iot.CLASSES, np.bincount(s.y, minlength=5).tolist()))
    assert counts == {"Normal": 0, "DDoS": 522, "DoS": 450, "Reconnaissance": 27, "Theft": 0}
    assert set(s.records.trailing["attack"]) == {"1"}
    assert s.records.numbers[0] == 2 and s.records.numbers[-1] == 1000


def test_bot_iot_comma_file_reads_like_the_tab_file(tmp_path):
    _needs(BOT_IOT_SAMPLE)
    comma = tmp_path / "sample.csv"
    comma.write_text(BOT_IOT_SAMPLE.read_text().replace("\t", ","))
    a, b = bot_iot.load_file(BOT_IOT_SAMPLE), bot_iot.load_file(comma)
    np.testing.assert_array_equal(a.y, b.y)
    for name in a.records.columns:
        np.testing.assert_array_equal(a.records.columns[name], b.records.columns[name])


def test_bot_iot_without_official_files_says_where_to_get_them(tmp_path):
    with pytest.raises(DataError, match=r"10_best_Training\.csv not found.*"
                                        r"research\.unsw\.edu\.au/projects/bot-iot-dataset"):
        bot_iot.load(tmp_path)


def test_iiot_fixture_layout_and_split():
    d = _iiot_fixture()
    header = IIOT_FIXTURE.read_text().splitlines()[0].split(",")
    assert tuple(header) == wustl_iiot.FEATURES + ("Traffic", "Target")
    full = wustl_iiot.load_file(IIOT_FIXTURE)
    assert all(n >= 3 for n in np.bincount(full.y, minlength=5))
    assert all(np.bincount(d.tests["test"].y, minlength=5) >= 1)  # every class is tested
    assert "Proto" in d.train.records.columns and not d.schema.categorical


# --- registry --------------------------------------------------------------------------------

def test_registry():
    assert list(DATASETS) == ["nsl-kdd", "wustl-ehms", "wustl-ehms-net", "bot-iot", "wustl-iiot"]
    with pytest.raises(ValueError, match="unknown dataset 'kdd'; choose from nsl-kdd, "
                                         "wustl-ehms, wustl-ehms-net, bot-iot, wustl-iiot"):
        load_dataset("kdd")
    with pytest.raises(ValueError, match="train_set applies to nsl-kdd only"):
        load_dataset("wustl-ehms", DATA_DIR, train_set="KDDTrain+")


def test_nsl_kdd_dataset(data_dir):
    d = load_dataset("nsl-kdd", data_dir, train_set="KDDTrain+_20Percent")
    assert list(d.tests) == ["KDDTest+", "KDDTest-21"] and d.train.name == "KDDTrain+_20Percent"
    assert d.feature_defaults == {"k": 87, "zero_ratio": 0.9, "zero_scope": "numeric"}
    assert len(set(d.tests["KDDTest+"].labels)) == 38


def test_importing_the_registry_loads_no_pandas():
    code = ("import sys, edge_ids.train.datasets\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- bad files -------------------------------------------------------------------------------

IIOT_COLUMNS = wustl_iiot.FEATURES + ("Traffic", "Target")


def _set(column, value):
    return lambda fields: [value if c == column else f for c, f in zip(IIOT_COLUMNS, fields)]


def _edited(tmp_path, line_no, edit):
    """The IIoT fixture with line `line_no` (1: the header) split at commas and edited."""
    lines = IIOT_FIXTURE.read_text().splitlines()
    lines[line_no - 1] = ",".join(edit(lines[line_no - 1].split(",")))
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("line_no, edit, message", [
    (1, _set("Mean", "Avg"), r"bad\.csv, line 1: header does not match the expected 49 "
                             r"columns: missing Mean; unexpected Avg"),
    (5, _set("Traffic", "Ransom"), r"bad\.csv, line 5: unknown Traffic 'Ransom'; known values: "
                                   r"'normal', 'DoS', 'Reconn', 'CommInj', 'Backdoor'"),
    (7, _set("SrcBytes", "lots"), r"bad\.csv, line 7: non-numeric value in column 12 "
                                  r"\(SrcBytes\): 'lots'"),
    (3, _set("Dur", "inf"), r"bad\.csv, line 3: value not finite in column 29 \(Dur\): inf"),
    (4, lambda f: f + ["1"], r"bad\.csv, line 4: wrong column count: expected 49 fields, got 50"),
    (6, lambda f: f[:-1], r"bad\.csv, line 6: wrong column count: expected 49 fields, got 48"),
], ids=["header", "label", "non-numeric", "not-finite", "long-line", "short-line"])
def test_bad_input_names_file_line_and_column(tmp_path, line_no, edit, message):
    with pytest.raises(DataError, match=message):
        wustl_iiot.load_file(_edited(tmp_path, line_no, edit))


def test_ignored_columns_may_hold_anything(tmp_path):
    path = _edited(tmp_path, 4, _set("SrcAddr", "not-an-address"))
    assert len(wustl_iiot.load_file(path).y) == 40


def test_bad_value_in_a_tab_separated_crlf_file(tmp_path):
    _needs(BOT_IOT_SAMPLE)
    lines = BOT_IOT_SAMPLE.read_bytes().split(b"\r\n")[:6]
    fields = lines[4].split(b"\t")
    fields[7] = b"0x1f"  # stddev
    lines[4] = b"\t".join(fields)
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    with pytest.raises(DataError, match=r"bad\.tsv, line 5: non-numeric value in column 8 "
                                        r"\(stddev\): '0x1f'"):
        bot_iot.load_file(path)


def test_empty_line_and_empty_file(tmp_path):
    lines = IIOT_FIXTURE.read_text().splitlines()
    path = tmp_path / "gap.csv"
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"gap\.csv, line 4: empty line"):
        wustl_iiot.load_file(path)
    path.write_text(lines[0] + "\n")
    with pytest.raises(DataError, match=r"gap\.csv: no records"):
        wustl_iiot.load_file(path)
    path.write_text("")
    with pytest.raises(DataError, match=r"gap\.csv: empty file"):
        wustl_iiot.load_file(path)
