"""The modeling layer's shape, checked: sub-packages import only downward, no import cycle, no
private cross-module imports, function-level imports only of optional dependencies, no
family-name comparison outside the family modules, the library never imports the doors' helper,
and the size limits of the parts a newcomer reads first (sample(), Trainer, the README). Every
citation of the math points into the repository (docs/math.md)."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "python", "sedd")

# the sub-packages (and top modules) of sedd, and what each may import from sedd
FLOORS = {
    "core": set(),
    "data": {"core"},
    "nn": set(),
    "sampling": {"core", "nn"},
    "families": {"core", "nn", "sampling", "data"},
    "loading": {"core", "data", "nn", "families"},
    "config": {"core", "nn", "families", "loading"},
    "training": {"core", "data", "nn", "sampling", "families", "loading", "config"},
    "evaluation": {"core", "data", "families"},
    "cli": {"core", "loading", "training", "config"},
}
OPTIONAL = {"safetensors", "huggingface_hub", "yaml", "tiktoken", "tokenizers", "datasets",
            "transformers", "matplotlib", "torch.utils.tensorboard", "tqdm"}


def modules():
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                name = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
                yield name, path, f == "__init__.py"


def imports(name, path, is_package):
    """(absolute module, imported names, at module level?) of every import of a module."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            yield mod, [a.name for a in node.names], id(node) in top


def floor(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


ALL = list(modules())


@pytest.mark.parametrize("name, path, is_package", ALL, ids=[m[0] for m in ALL])
def test_imports_go_down_only(name, path, is_package):
    mine = floor(name)
    if mine is None or mine == "_moved":
        return
    for mod, names, _ in imports(name, path, is_package):
        if mod == "sedd":
            assert False, f"{name} imports the package root"
        if not mod.startswith("sedd."):
            continue
        theirs = floor(mod)
        assert theirs == mine or theirs in FLOORS[mine], f"{name} imports {mod} (floor {theirs})"
        assert theirs != "cli" or mine == "cli", f"{name} imports the doors' helper"


@pytest.mark.parametrize("name, path, is_package", ALL, ids=[m[0] for m in ALL])
def test_no_private_imports_and_function_level_imports_are_optional_dependencies(name, path,
                                                                                 is_package):
    for mod, names, at_top in imports(name, path, is_package):
        if mod.startswith("sedd.") and mod.rsplit(".", 1)[0] != name.rsplit(".", 1)[0]:
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{name} imports private {private} from {mod}"
        if not at_top and name != "sedd._moved":
            root = mod if mod in OPTIONAL else mod.split(".")[0]
            assert root in OPTIONAL, f"{name}: function-level import of {mod} (not optional)"


def test_no_import_cycle():
    graph = {name: set() for name, _, _ in ALL}
    for name, path, is_package in ALL:
        for mod, names, at_top in imports(name, path, is_package):
            if not at_top or not mod.startswith("sedd"):
                continue
            targets = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in graph] or [mod]
            graph[name].update(t for t in targets if t in graph and t != name)
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for t in graph[m]:
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, t]))
            if t not in state:
                visit(t, stack + [m])
        state[m] = "done"
    for m in graph:
        if m not in state:
            visit(m, [])


def family_names():
    from sedd.families import FAMILIES
    return set(FAMILIES)


def doors():
    folder = os.path.join(ROOT, "python")
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py")]


def test_no_family_name_comparison_outside_the_family_modules():
    names = family_names()
    assert {"sedd", "ar"} <= names
    offenders = []
    for path in [p for _, p, _ in ALL] + doors():
        if os.sep + "families" + os.sep in path:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                consts = [c.value for c in operands if isinstance(c, ast.Constant)]
                about = " ".join(ast.unparse(c) for c in operands if not isinstance(c, ast.Constant))
                if any(c in names for c in consts) and re.search(r"family|model|arch", about):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id == "is_autoregressive":
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders


def lines_of(path, kind, name):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, kind) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return node.end_lineno - start + 1
    raise AssertionError(f"{name} not found in {path}")


def test_the_parts_a_newcomer_reads_first_are_short():
    assert lines_of(os.path.join(PKG, "sampling", "sampler.py"), ast.FunctionDef, "sample") <= 40
    assert lines_of(os.path.join(PKG, "training", "trainer.py"), ast.ClassDef, "Trainer") <= 200
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) <= 300


def repo_files(exts=(".py", ".h", ".cpp", ".cu", ".cuh", ".md", ".sh", ".toml", ".txt")):
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "results")
                   and not d.endswith(".egg-info")]
        for f in files:
            if f.endswith(exts):
                yield os.path.join(folder, f)


def test_the_math_is_cited_in_the_repository():
    math = open(os.path.join(ROOT, "docs", "math.md"), encoding="utf-8").read()
    sections = set(re.findall(r"^## §(\d+)\.", math, re.M))
    assert sections == {str(i) for i in range(1, 9)}
    cited = 0
    for path in repo_files():
        text = open(path, encoding="utf-8", errors="replace").read()
        outside = "SEDD" + ".md"                  # the spec the math came from, not in the repo
        assert outside not in text, f"{path} cites a file outside the repository"
        for n in re.findall(r"docs/math\.md §(\d+)", text):
            assert n in sections, f"{path} cites docs/math.md §{n}, which does not exist"
            cited += 1
    assert cited >= 50


def test_old_module_paths_and_names_warn_and_still_work(tmp_path):
    """For one release the module paths before the sub-packages, and the old loader names, still
    import and work, with a DeprecationWarning."""
    import importlib
    import sys
    for old, name in [("sedd.model", "DDiT"), ("sedd.hub", "save_pretrained"),
                      ("sedd.trainer", "Trainer"), ("sedd.graphs", "Absorbing"),
                      ("sedd.inference", "condition_from"), ("sedd.runconfig", "RunConfig"),
                      ("sedd.predictors", "register")]:
        sys.modules.pop(old, None)                 # a fresh import warns
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
            module = importlib.import_module(old)
        assert callable(getattr(module, name))
    from sedd.sampling import sample               # a package now, at the same path
    assert callable(sample)
    from sedd.model import PRESETS
    assert PRESETS["tiny"]["hidden_size"] == 128 and "steps" not in PRESETS["tiny"]
    from sedd.nn import ModelConfig             # checkpoints before the seam say model.arch
    assert ModelConfig(vocab_size=10, arch="ddit").family == "sedd"
    assert ModelConfig(vocab_size=10, arch="ar", scale_by_sigma=False).family == "ar"
    assert "arch" not in ModelConfig(vocab_size=10, arch="ar").to_dict()
    from sedd.config import TrainConfig
    from sedd.training import Trainer
    Trainer(TrainConfig.from_preset("micro", steps=1, out=str(tmp_path), progress=False,
                                    final_report=False, device="cpu")).fit()
    import sedd.loading as L
    with pytest.warns(DeprecationWarning, match="load_pretrained is deprecated"):
        p = L.load_pretrained(str(tmp_path))
    with pytest.warns(DeprecationWarning, match="read_run_config is deprecated"):
        assert L.read_run_config(str(tmp_path)).model == p.model.config

