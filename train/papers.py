"""The papers edge-ids reproduces: their method grids, the figures they published and where
ours differ from them, and where their results are written. The registry alone (no training):
`reproduce` runs it, `audit` and the studies read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .experiment import Method
from .paths import RESULTS

RESULTS_DIR = RESULTS  # the repository's, wherever the command starts (train/paths.py)
AUDIT_DIR = RESULTS_DIR / "audit"

_KDD_DR = ("Normal", "DoS", "Probe", "R2L", "U2R")


def _published(acc, pre, rec, f1, mcc=None, fpr=None, dr=None) -> dict:
    out = {"accuracy": acc, "macro_precision": pre, "macro_recall": rec, "macro_f1": f1}
    if mcc is not None:
        out["mcc"] = mcc
    if fpr is not None:
        out["fpr"] = fpr
    if dr is not None:
        out["recall"] = dict(zip(_KDD_DR, dr))
    return out


@dataclass
class Paper:
    key: str
    title: str
    dataset: str
    train_set: str | None
    val_fraction: float
    methods: list[Method]
    published: dict = field(default_factory=dict)  # {method: {test set: metrics in 0..1}}
    published_note: str = ""
    deviations: list[str] = field(default_factory=list)  # from the paper, each with its reason


_CE_DNN = dict(model="dnn", loss="ce")
KHANAM = Paper(
    key="khanam2022",
    title="Khanam et al. 2022, CFLVAE-DNN on NSL-KDD (KDDTrain+_20Percent)",
    dataset="nsl-kdd", train_set="KDDTrain+_20Percent", val_fraction=0.2,
    methods=[Method("DNN (CE)", **_CE_DNN), Method("ROS-DNN", resample="ros", **_CE_DNN),
             Method("SMOTE-DNN", resample="smote", **_CE_DNN),
             Method("ADASYN-DNN", resample="adasyn", **_CE_DNN),
             Method("CFLVAE-DNN", resample="cflvae", **_CE_DNN)],
    published={"CFLVAE-DNN": {
        "KDDTest+": _published(.8808, .8825, .8802, .8769, fpr=.0377,
                               dr=(.9528, .8387, .8301, .7926, .675)),
        "KDDTest-21": _published(.7622, .8016, .7621, .7666, fpr=.0651,
                                 dr=(None, .7228, .8282, .7925, .66))}},
    published_note="The paper gives figures in its text only for CFLVAE-DNN (section 5.2, "
                   "table 2); ROS/SMOTE/ADASYN-DNN appear only as bar charts (figures 10, 11). "
                   "It does not say how precision, recall and F1 are averaged (its recall equals "
                   "its accuracy, which suggests weighted averages); ours are macro averages, "
                   "with the weighted F1 beside them.",
    deviations=[
        "Validation rows: 20 % of the training file is carved out (stratified) *before* any "
        "resampling and never resampled; the paper splits its balanced set, generated rows "
        "included (its algorithm 3). Generated rows in a validation set would grade the "
        "generator, not the detector.",
        "The learning rate's polynomial decay (\"decay steps 10\") is read as 10 epochs: ten "
        "optimizer steps would end the decay inside the first epoch. After it Adam runs at "
        "1e-5.",
        "The paper's three-fold cross-validation of the DNN (section 4.2) is not repeated: "
        "its test figures are on KDDTest+ and KDDTest-21, as ours.",
        "The CFLVAE's class-wise γ/α are the paper's section 5.2 values (γ 1.3 for DoS and "
        "Probe, 1.5 for R2L and U2R; α 0.5 and 0.6); Normal, which the paper does not name, "
        "gets the DoS/Probe pair.",
        "Each minority class is generated up to the majority class's count (a balanced set, "
        "the paper's figure 5c); the paper does not give its counts.",
    ],
)

_EHMS_FNN = dict(model="fnn", model_options={"hidden": (50,)})
_FOCAL = {"gamma": 2.0, "alpha": 2.0}  # Dina et al.'s WUSTL-EHMS settings
DINA = Paper(
    key="dina2023",
    title="Dina et al. 2023, focal-loss FNN and CNN on WUSTL-EHMS-2020",
    dataset="wustl-ehms", train_set=None, val_fraction=0.1,
    methods=[Method("FNN-ORG", **_EHMS_FNN), Method("FNN-RND", resample="ros", **_EHMS_FNN),
             Method("FNN-CTGANSamp", resample="ctgan", **_EHMS_FNN),
             Method("FNN-Dice", loss="dice", **_EHMS_FNN),
             Method("FNN-Focal", loss="focal", loss_options=_FOCAL, **_EHMS_FNN),
             Method("CNN-ORG", model="cnn"),
             Method("CNN-Focal", model="cnn", loss="focal", loss_options=_FOCAL)],
    published={name: {"test": _published(*v)} for name, v in {
        "FNN-ORG": (.9308, .9382, .7359, .7975, .6430),
        "FNN-RND": (.9305, .9339, .7367, .7974, .6410),
        "FNN-CTGANSamp": (.9299, .9294, .7364, .7962, .6372),
        "FNN-Dice": (.9302, .9336, .5000, .4665, .0000),
        "FNN-Focal": (.9326, .9524, .7369, .8011, .6548),
        "CNN-ORG": (.9289, .9284, .7327, .7927, .6316),
        "CNN-Focal": (.9308, .9423, .7338, .7963, .6431)}.items()},
    published_note="Published figures: the paper's WUSTL-EHMS-2020 table (Acc, Pre, Rec, F1, "
                   "MCC). Its code prints both macro and weighted averages and does not say "
                   "which the table holds; ours are macro averages, with the weighted F1 "
                   "beside them.",
    deviations=[
        "Dina et al.'s preprocessing and split are not published: ours is a stratified 80/20 "
        "split of the one file (seed 2020) with 10 % of the training rows as validation; "
        "address, MAC, port and record-number columns are dropped (they identify the "
        "attacker, not the attack).",
        "Their code has no CNN: ours is a small 1D-CNN trained with the FNN's recipe.",
        "CTGAN's own settings are not given: 100 epochs, one GAN per minority class.",
    ],
)

PAPERS = {"khanam2022": KHANAM, "dina2023": DINA}
