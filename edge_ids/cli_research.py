"""`edge-ids train` and `edge-ids reproduce`: the research side of the CLI (host only).
The dataset, sampler and paper registries import only numpy; models and losses import Keras,
so their names are spelled out here (tests/test_cli.py checks them against the registries) and
`--help` never loads TensorFlow."""
from __future__ import annotations

from pathlib import Path

import click

from . import exit_codes
from .cli_options import (alpha_option, data_dir_option, parse_alpha, require_data,
                          seed_option, val_fraction_option)
from .exit_codes import BadInput, Failed
from .train.datasets import DATASETS, DataError
from .train.protocols import PROTOCOLS
from .train.papers import PAPERS
from .train.resample import SAMPLERS

DATASET_NAMES = tuple(DATASETS)
MODEL_NAMES = ("fnn", "cnn", "dnn")
LOSS_NAMES = ("ce", "focal", "classwise_focal", "dice")
SAMPLER_NAMES = SAMPLERS
PAPER_NAMES = tuple(PAPERS)
PROTOCOL_NAMES = tuple(PROTOCOLS)
BUDGET_NAMES = ("paper", "reduced")  # train/models.py BUDGETS (tests/test_cli.py checks)


@click.command(epilog=exit_codes.epilog(),
               short_help="Train one model, loss and imbalance method; test it.")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True,
              help="Dataset (bot-iot and wustl-iiot need their official files in --data-dir).")
@click.option("--model", type=click.Choice(MODEL_NAMES), required=True,
              help="fnn, cnn (Dina et al. 2023) or dnn (Khanam et al. 2022).")
@click.option("--loss", type=click.Choice(LOSS_NAMES), default="ce", show_default=True,
              help="Cross-entropy, focal, class-wise focal or Dice.")
@click.option("--resample", type=click.Choice(SAMPLER_NAMES), default="none",
              show_default=True, help="Imbalance method applied to the training rows only.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: model.keras, features.json, training.json, bundle/.")
@data_dir_option
@click.option("--train-set", type=click.Choice(["KDDTrain+", "KDDTrain+_20Percent"]),
              default=None, help="NSL-KDD only: which training file (default KDDTrain+).")
@click.option("--hidden", default=None,
              help="Hidden layer sizes, comma-separated (fnn/dnn; default: the paper's).")
@click.option("--gamma", type=click.FloatRange(0), default=None,
              help="Focal loss gamma (default 2).")
@alpha_option
@click.option("--ratio", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True, help="Resampling target per minority class, as a share of "
              "the majority class (1 = balanced).")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="At most this many epochs (default: the paper's); early stopping on the "
                   "validation loss ends sooner.")
@val_fraction_option
@click.option("--budget", type=click.Choice(BUDGET_NAMES), default="reduced", show_default=True,
              help="reduced: batch 256 (DNN), early stopping; paper: the paper's batch size "
                   "and epochs, no early stopping, as `edge-ids reproduce` runs it.")
@seed_option
@click.option("--bundle/--no-bundle", default=True, show_default=True,
              help="Also quantize to int8 and write OUT/bundle (checked on the edge runtime).")
def train(dataset, model, loss, resample, out, data_dir, train_set, hidden, gamma, alpha, ratio,
          epochs, val_fraction, budget, seed, bundle):
    """Train one model, loss and imbalance method; evaluate it on the test sets.

    The feature spec is fitted on the training rows, the validation rows are carved from the
    training file before resampling, and the test files are only ever evaluated.

    \b
    Example: edge-ids train --dataset nsl-kdd --train-set KDDTrain+_20Percent \\
               --model dnn --resample cflvae --out out/cflvae-dnn
    """
    if train_set and dataset != "nsl-kdd":
        raise click.BadParameter("only NSL-KDD has more than one training file",
                                 param_hint="--train-set")
    model_options = {"hidden": _sizes(hidden)} if hidden else {}
    loss_options = {k: v for k, v in (("gamma", gamma), ("alpha", parse_alpha(alpha, dataset)))
                    if v is not None}
    if loss_options and loss != "focal":
        raise click.BadParameter("--gamma/--alpha apply to --loss focal",
                                 param_hint="--gamma/--alpha")
    resample_options = {"ratio": ratio} if resample != "none" else {}
    training = {"epochs": epochs} if epochs else {}
    require_data(dataset, data_dir, train_set)
    from .training import run_training

    if model == "fnn" and not hidden:
        from .train.models import FNN_HIDDEN
        model_options = {"hidden": FNN_HIDDEN[dataset]}
    try:
        run_training(dataset, model, loss, resample, out, data_dir=data_dir,
                     train_set=train_set, seed=seed, val_fraction=val_fraction,
                     model_options=model_options, loss_options=loss_options,
                     resample_options=resample_options, training=training, bundle=bundle,
                     budget=budget, echo=click.echo)
    except DataError as e:
        raise BadInput(str(e)) from None
    except (ValueError, RuntimeError) as e:
        raise Failed(str(e)) from None


@click.command(epilog=exit_codes.epilog(),
               short_help="A paper's method grid over seeds: results.md and plots.")
@click.argument("paper", type=click.Choice(PAPER_NAMES))
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default=None,
              help="dina2023: wustl-ehms (the one of its datasets we have); khanam2022: "
                   "nsl-kdd. Default: that one.")
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default benchmarks/results/PAPER; for a protocol other "
                   "than official, benchmarks/results/audit/PAPER-PROTOCOL).")
@click.option("--seeds", default="0,1,2", show_default=True,
              help="Comma-separated seeds; the tables give mean ± std over them.")
@click.option("--budget", type=click.Choice(BUDGET_NAMES), default="paper", show_default=True,
              help="paper: the paper's batch size and epochs, no early stopping; reduced: the "
                   "first reproduction's (batch 256, at most 100 epochs, early stopping).")
@click.option("--protocol", type=click.Choice(PROTOCOL_NAMES), default="official",
              show_default=True,
              help="official: the paper's split (the headline). merged-resplit: training file "
                   "and KDDTest+ pooled and re-split 80/20; test-selected: the epoch picked by "
                   "KDDTest+ accuracy. Those two are the audit and never touch the official "
                   "results.")
@click.option("--methods", default=None,
              help="Comma-separated method names to run (default: the whole grid), e.g. "
                   "'DNN (CE),CFLVAE-DNN'.")
@click.option("--quick", is_flag=True,
              help="Smoke run: 10 epochs, small generation, a training subset (what CI runs).")
@click.option("--resume", is_flag=True,
              help="Reuse the runs an interrupted grid finished (kept in OUT/runs/ with their "
                   "settings; only runs under the same paper, protocol, budget and --quick "
                   "are reused). Seeds can also run as parallel processes, one --seeds each, "
                   "then one --resume over all seeds writes the tables.")
def reproduce(paper, dataset, data_dir, out, seeds, budget, protocol, methods, quick, resume):
    """Run a paper's method grid and write results.md, results.json and PNGs.

    \b
    khanam2022  DNN (CE), ROS-, SMOTE-, ADASYN-, CFLVAE-DNN;
                NSL-KDD 20 %, tested on KDDTest+ and KDDTest-21
    dina2023    FNN-ORG/-RND/-CTGANSamp/-Dice/-Focal, CNN-ORG/-Focal;
                WUSTL-EHMS-2020

    Our figures sit beside the paper's published ones. All tuning uses validation rows carved
    from the training data, and the same seeds give the same figures, bit for bit, on the
    same machine and software. At the papers' budget on 2 shared CPU cores dina2023 took 36
    min and khanam2022 112 min of training (74 min as two processes; README, "Reproducing the
    papers").
    """
    seed_list = tuple(_sizes(seeds, positive=False, option="--seeds"))
    setup = PAPERS[paper]
    if dataset is not None and dataset != setup.dataset:
        raise click.BadParameter(f"{paper} runs on {setup.dataset}", param_hint="--dataset")
    require_data(setup.dataset, data_dir, setup.train_set)
    from .train.reproduce import default_out, reproduce as run

    names = [m.strip() for m in methods.split(",")] if methods else None
    try:
        run(paper, out or default_out(paper, protocol), data_dir=data_dir, dataset=dataset,
            seeds=seed_list, quick=quick, budget=budget, protocol=protocol, methods=names,
            resume=resume, echo=click.echo)
    except DataError as e:
        raise BadInput(str(e)) from None
    except ValueError as e:  # an unknown method, a protocol the dataset has no use for, ...
        raise click.UsageError(str(e)) from None
    except RuntimeError as e:
        raise Failed(str(e)) from None


def _sizes(text: str, positive: bool = True, option: str = "--hidden") -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=option) from None
    if positive and min(values) < 1:
        raise click.BadParameter("sizes must be positive", param_hint=option)
    return values
