import re
from pathlib import Path

import pytest

from patchkit.codemods import ALL, REGISTRY, CodemodOptionError, run_codemod


def test_names_unique_and_stable_shape():
    names = [cls.NAME for cls in ALL]
    assert len(names) == len(set(names))
    for cls in ALL:
        assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", cls.NAME), cls.NAME
        assert cls.DESCRIPTION and cls.LOOKS_FOR
        assert cls.__doc__ and "Hazard" in cls.__doc__, f"{cls.NAME}: docstring must name the hazard"


def test_unknown_option_is_rejected():
    with pytest.raises(CodemodOptionError, match="does not accept option"):
        run_codemod(REGISTRY["isnan-guard"], "x = 1\n", options={"nope": 1})


def test_isnan_guard_bad_mode():
    with pytest.raises(CodemodOptionError, match="mode must be"):
        run_codemod(REGISTRY["isnan-guard"], "x = 1\n", options={"mode": "maybe"})


@pytest.mark.parametrize("name,options", [
    ("static-kv-cache", {"class_name": "Cache"}),  # the upstream's buffer, index and method names
    ("kv-cache-callsites", {"renames": {"seq_len": "seq_pos"}}),  # the upstream's cache parameter names
    ("decode-prefix-slice", {}),
    ("decode-prefix-slice", {"receivers": ["cache"], "prefix_tensor": "torch.clamp(("}),
])
def test_upstream_names_have_no_defaults(name, options):
    """Codemods know no model: every name from the upstream comes from the patch set."""
    with pytest.raises(CodemodOptionError):
        run_codemod(REGISTRY[name], "x = 1\n", options=options)


def test_apply_refuses_a_step_order_that_breaks_a_declared_dependency():
    from dataclasses import replace

    from patchkit import patches
    from patchkit.apply import check_order, plan
    from patchkit.errors import BadInput

    toto = patches.get("toto")
    check_order(toto)  # the shipped order holds
    steps = list(toto.steps)
    i = next(k for k, s in enumerate(steps) if s.codemod == "static-kv-cache")
    steps[i - 1], steps[i] = steps[i], steps[i - 1]  # static-kv-cache before item-scalar
    with pytest.raises(BadInput, match=r"step 1 \(static-kv-cache\) must run after item-scalar, which comes later"):
        plan(replace(toto, steps=tuple(steps)), {}, "0")
    without = tuple(s for s in toto.steps if s.codemod != "item-scalar")
    with pytest.raises(BadInput, match="which is not in the patch set"):
        plan(replace(toto, steps=without), {}, "0")


def test_runtime_helpers_are_one_real_module():
    """Every helper name a codemod writes is a function of ``codemods/runtime_helpers.py``, which a patched tree
    imports without patchkit (only ``sys`` and ``torch``), and no codemod carries helper code as text."""
    import ast
    import inspect

    from patchkit.codemods import base, runtime_helpers

    for name in base.HELPER_NAMES:
        assert inspect.isfunction(getattr(runtime_helpers, name, None)), name
    tree = ast.parse(inspect.getsource(runtime_helpers))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert {i.partition(".")[0] for i in imported} <= {"__future__", "sys", "torch"}, imported
    assert base.helpers_source() == Path(runtime_helpers.__file__).read_bytes()
    for path in Path(base.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "def " in node.value:
                try:
                    body = ast.parse(node.value.strip("\n")).body
                except SyntaxError:
                    continue
                assert not any(isinstance(s, (ast.FunctionDef, ast.ClassDef)) for s in body), \
                    f"{path.name} holds helper code as a string: move it to runtime_helpers.py"


def test_helper_imports_are_relative_to_the_top_level_package_and_merged():
    src = "import torch\n\n\ndef run(step, x, n):\n    return step(x, n=n)\n"
    opts = {"function": "run", "calls": ["step"]}
    one = run_codemod(REGISTRY["dynamic-step-inputs"], src, options={**opts, "ints": ["n"]}, package="pkg.sub")
    assert "from .._patchkit_helpers import _patchkit_dynamic_int, _patchkit_mark_dynamic\n" in one.code
    two = run_codemod(REGISTRY["pad-single-row"], one.code, options={**opts, "rows": ["x"]}, package="pkg.sub")
    assert two.code.count("_patchkit_helpers import") == 1
    assert ("from .._patchkit_helpers import _patchkit_dynamic_int, _patchkit_mark_dynamic, "
            "_patchkit_pad_single_row\n") in two.code
    again = run_codemod(REGISTRY["pad-single-row"], two.code, options={**opts, "rows": ["x"]}, package="pkg.sub")
    assert again.code == two.code and again.already
    top = run_codemod(REGISTRY["dynamic-step-inputs"], src, options=opts, package="pkg")
    assert "from ._patchkit_helpers import _patchkit_mark_dynamic\n" in top.code
