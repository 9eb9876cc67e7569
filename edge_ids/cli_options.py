"""Options that several commands share, defined once (same name, default and help everywhere),
and the checks every command makes before it imports anything heavy: a wrong path, device or
data folder is reported in a fraction of a second, not after TensorFlow has loaded."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .exit_codes import BadInput
from .train.datasets import DATA_DIR_ENV, DataError, class_names, data_files

DEFAULT_VAL_FRACTION = 0.1
BUNDLE_HELP = ("a bundle folder (or .tar.gz of one): manifest.json with model.tflite + "
               "features.json (a classifier) and/or anomaly.tflite + anomaly.json (an anomaly "
               "model)")


def data_dir_option(command):
    return click.option(
        "--data-dir", type=click.Path(exists=True, file_okay=False), envvar=DATA_DIR_ENV,
        help=f"Folder with the dataset files, or with their folders (nsl-kdd/, "
             f"wustl-ehms-2020/, ...); default ${DATA_DIR_ENV}.")(command)


def seed_option(command):
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seeds the validation split, the weights, shuffling and "
                             "sampling.")(command)


def val_fraction_option(command):
    return click.option(
        "--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=DEFAULT_VAL_FRACTION, show_default=True,
        help="Stratified share of the training file held out for validation (early "
             "stopping and every other choice; the test files are never used).")(command)


def alpha_option(command):
    return click.option(
        "--alpha", default=None, metavar="A|A1,A2,...",
        help="Focal loss weight: one number, or one per class in the dataset's class order "
             "(default 1).")(command)


def checked_by(module: str, parser: str):
    """A click callback that checks a value with the runtime's own parser (imported only when
    the option is given, so --help stays fast) and turns its ValueError into a usage error
    (exit 2): one reading of --metrics, --ui and --home-net for every command."""
    def check(ctx, param, value):
        if value not in (None, ()):
            import importlib
            parse = getattr(importlib.import_module(f".{module}", __package__), parser)
            try:
                parse(value)
            except ValueError as e:
                raise click.BadParameter(str(e)) from None
        return value
    return check


def device_option(default: str | None = "pi4", help: str = "Device profile (see `edge-ids "
                                                              "devices`)."):
    """--device, checked against the profiles when the command line is parsed (exit 2)."""
    def check(ctx, param, name):
        if name is None:
            return None
        from .devices.profiles import ProfileError, load_profile
        try:
            load_profile(name)
        except ProfileError as e:
            raise click.BadParameter(str(e)) from None
        return name
    return click.option("--device", default=default, show_default=default is not None,
                        metavar="PROFILE", callback=check, help=help)


def bundle_option(help: str = f"The model: {BUNDLE_HELP}.", **kwargs):
    return click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path),
                        help=help, **kwargs)


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=option) from None
    if not values or min(values) < 1:
        raise click.BadParameter("sizes must be positive", param_hint=option)
    return values


def parse_alpha(text: str | None, dataset: str) -> float | list[float] | None:
    """--alpha as one number or one per class of `dataset`; None when not given."""
    if text is None:
        return None
    n = len(class_names(dataset))
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected a number or {n} comma-separated numbers",
                                 param_hint="--alpha") from None
    if len(values) not in (1, n) or min(values) <= 0:
        raise click.BadParameter(f"give one positive number or {n} (one per class: "
                                 f"{','.join(class_names(dataset))})", param_hint="--alpha")
    return values[0] if len(values) == 1 else values


def require_data(dataset: str, data_dir, train_set: str | None = None,
                 only_test: str | None = None) -> None:
    """The dataset's files are there (exit 5 naming the missing one, exit 2 without a folder)."""
    if not data_dir and not os.environ.get(DATA_DIR_ENV):
        raise click.UsageError(f"no data folder: pass --data-dir DIR or set {DATA_DIR_ENV}")
    try:
        data_files(dataset, data_dir, train_set=train_set, only_test=only_test)
    except DataError as e:
        raise BadInput(str(e)) from None


def require_bundle(path: Path):
    """The verified bundle (exit 5 saying what is wrong with it)."""
    from .edge_runtime.model.bundle import BundleError, load_bundle
    try:
        return load_bundle(path)
    except BundleError as e:
        raise BadInput(str(e)) from None
