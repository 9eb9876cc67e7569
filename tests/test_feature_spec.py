"""The feature spec: fitted as the CFLVAE paper describes, applied identically on host and edge."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ids.edge_runtime.model.features import FeatureTransform
from edge_ids.edge_runtime.ingest.records import RawSchema, parse_lines
from edge_ids.train.datasets import nsl_kdd
from edge_ids.train.feature_spec import fit_feature_spec

# DESIGN.md: the 16 numeric NSL-KDD features with more than 90 % zeros on KDDTrain+.
SPARSE_ON_KDDTRAIN = {
    "duration", "land", "wrong_fragment", "urgent", "hot", "num_failed_logins",
    "num_compromised", "root_shell", "su_attempted", "num_root", "num_file_creations",
    "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login"}


@pytest.fixture(scope="module")
def kdd_train(data_dir):
    return nsl_kdd.load("KDDTrain+", data_dir)


@pytest.fixture(scope="module")
def spec(kdd_train):
    # MI on a 3,000-row sample keeps this fast; the filter and vocabularies use every row.
    return fit_feature_spec(kdd_train.records, kdd_train.y, nsl_kdd.SCHEMA, mi_sample=3000)


def test_paper_filter_on_kddtrain(spec):
    assert set(spec["zero_ratio_filter"]["dropped"]) == SPARSE_ON_KDDTRAIN
    assert {c: len(v) for c, v in spec["one_hot"].items()} == {
        "protocol_type": 3, "service": 70, "flag": 11}
    kept = spec["kept"]
    assert sum("value" not in f for f in kept) == 22 and len(kept) == 106
    assert len(spec["selected"]) == 87 == len(set(spec["selected"]))
    mi = [kept[i]["mi"] for i in spec["selected"]]
    assert mi == sorted(mi, reverse=True)  # model inputs in MI rank order
    assert min(mi) >= max(f["mi"] for i, f in enumerate(kept) if i not in spec["selected"])


def test_filter_scope_and_k_are_options(kdd_train):
    spec = fit_feature_spec(kdd_train.records, kdd_train.y, nsl_kdd.SCHEMA, k=20,
                            zero_scope="none", mi_sample=1000)
    assert spec["zero_ratio_filter"]["dropped"] == [] and len(spec["kept"]) == 122
    assert len(spec["selected"]) == 20
    with pytest.raises(ValueError, match="k=200 features asked for, but 106 remain"):
        fit_feature_spec(kdd_train.records, kdd_train.y, nsl_kdd.SCHEMA, k=200, mi_sample=1000)


def test_training_inputs_are_scaled_to_unit_range(spec, kdd_train):
    x, unknown = FeatureTransform(spec).transform(kdd_train.records.columns)
    assert x.dtype == np.float32 and x.shape == (125_973, 87)
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.allclose(x.max(axis=0), 1.0)  # every kept feature reaches its training max
    assert unknown == {"protocol_type": 0, "service": 0, "flag": 0}


def test_host_path_equals_edge_path(spec, data_dir, kdd_test_lines):
    """Host: the loader's columns. Edge: raw lines parsed with the spec's own schema (as the
    device does, after the spec went through JSON). Same transform code, identical arrays."""
    host, _ = FeatureTransform(spec).transform(nsl_kdd.load("KDDTest+", data_dir).records.columns)
    device_spec = json.loads(json.dumps(spec))
    records, rejected = parse_lines(kdd_test_lines, RawSchema.from_spec(device_spec["raw"]))
    edge, _ = FeatureTransform(device_spec).transform(records.columns)
    assert not rejected
    assert host.shape == edge.shape == (22_544, 87)
    np.testing.assert_array_equal(host, edge)


def test_unseen_category_gives_all_zeros_and_is_counted(spec, kdd_test_lines):
    schema = RawSchema.from_spec(spec["raw"])
    fields = kdd_test_lines[2].decode().split(",")
    odd = fields[:2] + ["gopher-over-tls"] + fields[3:]
    records, _ = parse_lines([",".join(fields), ",".join(odd)], schema)
    x, unknown = FeatureTransform(spec).transform(records.columns)
    services = [p for p, i in enumerate(spec["selected"])
                if spec["kept"][i]["column"] == "service"]
    assert x[0, services].sum() == 1.0 and x[1, services].sum() == 0.0
    assert unknown["service"] == 1 and unknown["flag"] == 0
    others = [p for p in range(x.shape[1]) if p not in services]
    np.testing.assert_array_equal(x[0, others], x[1, others])


def test_values_beyond_the_training_range_are_clipped(spec, kdd_test_lines):
    schema = RawSchema.from_spec(spec["raw"])
    fields = kdd_test_lines[2].decode().split(",")
    huge, negative = list(fields), list(fields)
    huge[4] = "1e15"      # src_bytes far above the training max
    negative[4] = "-5"    # below the training min
    records, _ = parse_lines([",".join(huge), ",".join(negative)], schema)
    x, _ = FeatureTransform(spec).transform(records.columns)
    position = [spec["kept"][i]["name"] for i in spec["selected"]].index("src_bytes")
    assert x[:, position].tolist() == [1.0, 0.0]


def test_k_none_keeps_every_feature_the_filter_leaves_in_mi_order(kdd_train):
    spec = fit_feature_spec(kdd_train.records, kdd_train.y, nsl_kdd.SCHEMA, k=None,
                            mi_sample=1000)
    assert len(spec["kept"]) == 106 and sorted(spec["selected"]) == list(range(106))
    mi = [spec["kept"][i]["mi"] for i in spec["selected"]]
    assert mi == sorted(mi, reverse=True)


def test_ignored_column_is_read_past_and_never_a_feature():
    """An "ignored" column (here an address) counts as a field but is never parsed or used."""
    schema = RawSchema(("ip", "proto", "bytes"), ("ignored", "categorical", "numeric"),
                       trailing=("label",))
    lines = ["10.0.0.1,tcp,100,a", "not an address,udp,5,b", ",tcp,0,a", "10.0.0.9,tcp,7"]
    records, rejected = parse_lines(lines + ["10.0.0.1,tcp"], schema)
    assert [r.reason for r in rejected] == ["wrong_field_count"]
    assert set(records.columns) == {"proto", "bytes"} and schema.ignored == ["ip"]
    spec = fit_feature_spec(records, np.array([0, 1, 0, 1]), schema, k=None, zero_scope="none")
    assert {f["column"] for f in spec["kept"]} == {"proto", "bytes"}
    assert spec["raw"]["columns"][0] == {"name": "ip", "type": "ignored"}
    device = RawSchema.from_spec(json.loads(json.dumps(spec["raw"])))
    again, _ = parse_lines(lines, device)
    x, _ = FeatureTransform(spec).transform(again.columns)
    assert x.shape == (4, 3) and x.min() == 0.0 and x.max() == 1.0
