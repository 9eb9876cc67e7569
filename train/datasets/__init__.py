"""Dataset loaders and their registry. Every loader returns a `Dataset`: classes, the raw schema
the device reads, a training set, the test sets and the paper's feature-spec defaults.

Importing this package loads neither pandas nor any dataset (the CLI imports it).
"""
from __future__ import annotations

from pathlib import Path

from . import bot_iot, nsl_kdd, wustl_ehms, wustl_iiot
from .base import Dataset, LabelledSet
from .files import DATA_DIR_ENV, DataError, find_data_file

# name -> loader(data_dir) -> Dataset
DATASETS = {
    nsl_kdd.NAME: nsl_kdd.dataset,
    wustl_ehms.NAME: wustl_ehms.load,
    wustl_ehms.NETWORK_NAME: wustl_ehms.load_network_only,
    bot_iot.NAME: bot_iot.load,
    wustl_iiot.NAME: wustl_iiot.load,
}


def load_dataset(name: str, data_dir=None, train_set: str | None = None) -> Dataset:
    """Load a dataset by registry name; `train_set` picks NSL-KDD's training file only."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == nsl_kdd.NAME:
        return nsl_kdd.dataset(data_dir, train_set or nsl_kdd.TRAIN_SETS[0])
    if train_set is not None:
        raise ValueError(f"train_set applies to {nsl_kdd.NAME} only; {name} has one training set")
    return DATASETS[name](data_dir)


def data_files(name: str, data_dir=None, train_set: str | None = None,
               only_test: str | None = None) -> list[Path]:
    """The files `load_dataset` would read (with `only_test`: what `load_test_set` reads),
    found without reading them, so that a command can check them before it loads TensorFlow.
    DataError names the first one missing."""
    if only_test is not None and only_test not in test_set_names(name):
        raise ValueError(f"{name} has no test set {only_test!r}; it has "
                         f"{', '.join(test_set_names(name))}")
    if name == nsl_kdd.NAME:
        if only_test:
            return list(nsl_kdd.files(data_dir, None, (only_test,)).values())
        return list(nsl_kdd.files(data_dir, train_set or nsl_kdd.TRAIN_SETS[0]).values())
    if name == bot_iot.NAME:
        paths = bot_iot.find(data_dir)
        return [paths["test"]] if only_test else [paths["train"], paths["test"]]
    # WUSTL-EHMS and WUSTL-IIoT carve their test split out of their one file
    return [(wustl_iiot if name == wustl_iiot.NAME else wustl_ehms).find(data_dir)]


def load_test_set(name: str, data_dir=None, test_set: str | None = None) -> Dataset:
    """The dataset with only what scoring one test set needs: for NSL-KDD that test file alone
    (`train` is None, `tests` holds the one set). The others carve their test split out of
    their training file(s), so they load whole."""
    if name == nsl_kdd.NAME:
        return nsl_kdd.dataset(data_dir, None, (test_set or nsl_kdd.TEST_SETS[0],))
    return load_dataset(name, data_dir)


def class_names(name: str) -> tuple[str, ...]:
    """A dataset's classes, without loading it (for options given per class)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    module = {nsl_kdd.NAME: nsl_kdd, bot_iot.NAME: bot_iot, wustl_iiot.NAME: wustl_iiot}
    return module.get(name, wustl_ehms).CLASSES


def test_set_names(name: str) -> tuple[str, ...]:
    """The names of a dataset's test sets, in the order the papers report them."""
    class_names(name)  # an unknown name is a ValueError
    return nsl_kdd.TEST_SETS if name == nsl_kdd.NAME else ("test",)


__all__ = ["DATASETS", "DATA_DIR_ENV", "DataError", "Dataset", "LabelledSet", "class_names",
           "data_files", "find_data_file", "load_dataset", "load_test_set", "test_set_names"]
