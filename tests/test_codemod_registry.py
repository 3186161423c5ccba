import re

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
