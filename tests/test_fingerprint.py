"""Caches keyed by what made them (train/fingerprint.py): a result made under other settings,
data or code is never reused, and the run says why it made it again."""
from __future__ import annotations

import json

from edge_ids.benchmarks.detection.metrics import cached
from edge_ids.train.fingerprint import Stamp, code_version, files_fingerprint


def test_a_stamped_folder_is_kept_only_under_the_same_key(tmp_path):
    folder = tmp_path / "run"
    said = []
    assert Stamp(folder, {"seed": 0, "code": "a"}).ensure(said.append) is False  # new
    (folder / "result.json").write_text("{}")
    assert Stamp(folder, {"seed": 0, "code": "a"}).ensure(said.append) is True
    assert (folder / "result.json").is_file() and not said
    assert Stamp(folder, {"seed": 0, "code": "b"}).ensure(said.append) is False
    assert not (folder / "result.json").exists()  # emptied, not reused
    assert said == [f"      {folder}: made under other code; made again"]
    assert json.loads((folder / "key.json").read_text()) == {"code": "b", "seed": 0}


def test_a_folder_made_before_keys_existed_is_made_again(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "bundle").mkdir()
    (folder / "bundle" / "manifest.json").write_text("{}")  # what the old check accepted
    said = []
    assert cached(folder, {"epochs": 3}, [], said.append) is False
    assert not (folder / "bundle").exists() and "made again" in said[0]


def test_a_classifier_is_reused_only_under_the_same_settings_and_data(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    folder = tmp_path / "classifier"
    assert cached(folder, {"epochs": 200}, [data], print) is False
    (folder / "bundle").mkdir()
    (folder / "bundle" / "manifest.json").write_text("{}")
    assert cached(folder, {"epochs": 200}, [data], print) is True
    assert cached(folder, {"epochs": 3}, [data], print) is False  # a smoke run is not it
    (folder / "bundle").mkdir()
    (folder / "bundle" / "manifest.json").write_text("{}")
    assert cached(folder, {"epochs": 3}, [data], print) is True
    data.write_text("a,b\n1,3\n")  # other data
    assert cached(folder, {"epochs": 3}, [data], print) is False


def test_fingerprints_follow_the_contents():
    assert len(code_version()) == 16 and code_version() == code_version()
    assert code_version(("edge_runtime",)) != code_version(("train",))


def test_file_fingerprints_follow_contents_not_times(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    first = files_fingerprint([a])
    a.touch()
    assert files_fingerprint([a]) == first
    a.write_text("y")
    assert files_fingerprint([a]) != first
