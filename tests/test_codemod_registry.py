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
