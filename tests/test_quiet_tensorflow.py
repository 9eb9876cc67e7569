"""No TensorFlow or absl line on any CPU. On CPUs with AVX-512 VNNI or AMX, TensorFlow turns on
oneDNN's custom kernels and announces them with absl lines written before absl is initialised,
which TF_CPP_MIN_LOG_LEVEL does not silence; TF_ENABLE_ONEDNN_OPTS=0 does. This test does not
need such a CPU: it checks that both variables are set before TensorFlow is imported, whichever
way edge-ids is entered, and that a user's own choice is kept."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = ("import os, sys\n{entry}\n"
         "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")


def run(entry: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_")} | env
    done = subprocess.run([sys.executable, "-c", CHECK.format(entry=entry)], env=clean,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-2:]


@pytest.mark.parametrize("entry", ["import edge_ids.cli", "import edge_ids.train",
                                   "import edge_ids.compress.quantize",
                                   "from edge_ids.train import anomaly"])
def test_the_variables_are_set_before_tensorflow_can_be_imported(entry):
    assert run(entry) == ["0", "3"]


def test_a_users_own_setting_is_kept():
    assert run("import edge_ids", TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="1") == \
        ["1", "1"]


def test_tensorflow_imported_through_edge_ids_prints_nothing():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run([sys.executable, "-c", "import edge_ids.train, tensorflow"],
                          env=clean, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
