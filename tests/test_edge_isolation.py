"""The device side stays small: edge_runtime imports numpy, the standard library and a TFLite
interpreter, nothing from train/ or compress/, and never TensorFlow, scikit-learn, Keras, pandas."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

from conftest import REPO

HEAVY = {"tensorflow", "sklearn", "keras", "pandas", "scipy", "matplotlib"}


def _modules_after(code: str, *args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_loading_and_running_a_bundle_imports_nothing_heavy(small_pipeline):
    code = ("import json, sys\n"
            "from edge_ids.edge_runtime import Classifier, load_bundle\n"
            "import edge_ids.edge_runtime.model.classify\n"
            "Classifier(load_bundle(sys.argv[1]))\n"
            "print(json.dumps(sorted(sys.modules)))")
    modules = _modules_after(code, str(small_pipeline[0] / "bundle"))
    assert "ai_edge_litert.interpreter" in modules  # the check is not vacuous
    assert not {m.split(".")[0] for m in modules} & HEAVY
    assert not [m for m in modules if m.startswith(("edge_ids.train", "edge_ids.compress"))]


def test_the_classify_command_imports_nothing_heavy(small_pipeline, data_dir):
    code = ("import json, sys\n"
            "from edge_ids.cli import main\n"
            "try:\n"
            "    main(['classify', '--bundle', sys.argv[1], sys.argv[2], '-o', '/dev/null'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(json.dumps(sorted(sys.modules)))")
    modules = _modules_after(code, str(small_pipeline[0] / "bundle"),
                             str(data_dir / "nsl-kdd" / "KDDTest-21.txt.gz"))
    assert "edge_ids.edge_runtime.model.classifier" in modules
    assert not {m.split(".")[0] for m in modules} & HEAVY


def test_the_daemon_imports_nothing_heavy(small_pipeline, tmp_path):
    records = tmp_path / "r.csv"
    records.write_text("0,tcp,http,SF,181,5450" + ",0" * 35 + "\n")
    code = ("import json, sys\n"
            "from edge_ids.cli import main\n"
            "try:\n"
            "    main(['run', '--bundle', sys.argv[1], '--input', 'file:' + sys.argv[2],\n"
            "          '--alerts', '/dev/null', '--metrics', '127.0.0.1:0'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(json.dumps(sorted(sys.modules)))")
    modules = _modules_after(code, str(small_pipeline[0] / "bundle"), str(records))
    assert {"edge_ids.edge_runtime.daemon", "prometheus_client"} <= modules
    assert not {m.split(".")[0] for m in modules} & HEAVY


def test_edge_runtime_sources_import_only_light_modules():
    allowed_third_party = {"numpy", "ai_edge_litert", "tflite_runtime", "prometheus_client"}
    root = REPO / "edge_runtime"
    for path in sorted(root.rglob("*.py")):
        depth = len(path.relative_to(root).parts)  # 1: edge_runtime/x.py, 2: a sub-package's
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level <= depth, f"{path.name} imports from outside edge_runtime"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module])
                for name in names:
                    top = name.split(".")[0]
                    # (importlib strings are checked at run time by the tests above)
                    assert top in sys.stdlib_module_names or top in allowed_third_party, \
                        f"{path.name} imports {name}"


def test_the_benchmark_code_that_runs_on_the_device_imports_nothing_heavy():
    code = ("import json, sys\n"
            "import edge_ids.benchmarks.bench.device, edge_ids.benchmarks.bench.measure\n"
            "print(json.dumps(sorted(sys.modules)))")
    modules = _modules_after(code)
    assert "edge_ids.benchmarks.bench.runtimes" in modules
    assert not {m.split(".")[0] for m in modules} & HEAVY
    assert not [m for m in modules if m.startswith(("edge_ids.train", "edge_ids.compress"))]
