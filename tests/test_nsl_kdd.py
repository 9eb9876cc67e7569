"""The NSL-KDD loader on the real files, and its errors (each names the file and line)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from edge_ids.train.datasets import DataError, nsl_kdd
from conftest import NSL_KDD

ROWS = {"KDDTrain+": 125_973, "KDDTrain+_20Percent": 25_192, "KDDTest+": 22_544,
        "KDDTest-21": 11_850}


@pytest.mark.parametrize("name", ROWS)
def test_row_counts(data_dir, name):
    s = nsl_kdd.load(name, data_dir)
    assert len(s.y) == len(s.records) == ROWS[name]
    assert set(s.records.columns) >= set(nsl_kdd.FEATURES)


def test_train_class_counts(data_dir):
    s = nsl_kdd.load("KDDTrain+", data_dir)
    counts = {c: int(np.sum(s.y == i)) for i, c in enumerate(nsl_kdd.CLASSES)}
    assert counts == {"Normal": 67_343, "DoS": 45_927, "Probe": 11_656, "R2L": 995, "U2R": 52}
    assert int(s.y_binary.sum()) == 125_973 - 67_343


def test_test_only_attack_names_are_mapped():
    expected = {"DoS": "apache2 mailbomb processtable udpstorm worm", "Probe": "mscan saint",
                "R2L": "httptunnel named sendmail snmpgetattack snmpguess xlock xsnoop",
                "U2R": "ps sqlattack xterm"}
    for cls, names in expected.items():
        for name in names.split():
            assert nsl_kdd.LABEL_CLASS[name] == cls


def test_every_label_of_the_test_files_is_known(data_dir):
    for name in nsl_kdd.TEST_SETS:
        s = nsl_kdd.load(name, data_dir)
        assert set(s.labels) <= set(nsl_kdd.LABEL_CLASS)
        assert len(set(s.labels)) == 38  # 37 attack names + normal (PROVENANCE.md)


def test_plain_file_equals_gz(data_dir, tmp_path):
    plain = tmp_path / "KDDTest-21.txt"
    plain.write_bytes(gzip.decompress((NSL_KDD / "KDDTest-21.txt.gz").read_bytes()))
    a, b = nsl_kdd.load("KDDTest-21", tmp_path), nsl_kdd.load("KDDTest-21", data_dir)
    assert a.path == plain
    np.testing.assert_array_equal(a.y, b.y)
    for column in nsl_kdd.FEATURES:
        np.testing.assert_array_equal(a.records.columns[column], b.records.columns[column])


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("EDGE_IDS_DATA_DIR", str(data_dir))
    assert len(nsl_kdd.load("KDDTest-21").y) == ROWS["KDDTest-21"]


def test_missing_file_names_it_and_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"KDDTest\+\.txt not found: looked for .*nsl-kdd"):
        nsl_kdd.load("KDDTest+", tmp_path)


def test_no_data_dir_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("EDGE_IDS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="pass --data-dir DIR or set EDGE_IDS_DATA_DIR"):
        nsl_kdd.load("KDDTest+")


def _corrupt(kdd_test_lines, tmp_path, line_no, edit) -> str:
    lines = [l.decode() for l in kdd_test_lines[:6]]
    lines[line_no - 1] = edit(lines[line_no - 1].rstrip("\n").split(",")) + "\n"
    path = tmp_path / "bad.txt"
    path.write_text("".join(lines))
    return str(path)


def test_wrong_column_count(kdd_test_lines, tmp_path):
    path = _corrupt(kdd_test_lines, tmp_path, 3, lambda f: ",".join(f[:40]))
    with pytest.raises(DataError, match=r"bad\.txt, line 3: wrong column count: expected 43 "
                                        r"fields, got 40"):
        nsl_kdd.load_file(path)


def test_non_numeric_value(kdd_test_lines, tmp_path):
    path = _corrupt(kdd_test_lines, tmp_path, 4, lambda f: ",".join(f[:4] + ["lots"] + f[5:]))
    with pytest.raises(DataError, match=r"bad\.txt, line 4: non-numeric value in column 5 "
                                        r"\(src_bytes\): 'lots'"):
        nsl_kdd.load_file(path)


def test_unknown_label(kdd_test_lines, tmp_path):
    path = _corrupt(kdd_test_lines, tmp_path, 2, lambda f: ",".join(f[:41] + ["zeroday", f[42]]))
    with pytest.raises(DataError, match=r"bad\.txt, line 2: unknown attack label 'zeroday'"):
        nsl_kdd.load_file(path)


def test_unknown_file_name():
    with pytest.raises(DataError, match="unknown NSL-KDD file 'KDDTest'; choose from"):
        nsl_kdd.load("KDDTest", "/nonexistent")
