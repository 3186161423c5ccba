"""The TORCH_LOGS parser on text written in Dynamo's log format."""

from pathlib import Path

from patchkit.verify import logs

P = "V1121 01:06:56.527000 4794 torch/_dynamo/symbolic_convert.py:5124] [0/0] [__graph_breaks] "
R = "V1121 01:06:57.000000 4794 torch/_dynamo/guards.py:5396] [0/1] [__recompiles] "


def test_counts_first_and_suppressed_breaks_and_attributes_them(tmp_path: Path):
    src = tmp_path / "pkg" / "mod.py"
    src.parent.mkdir()
    src.write_text("def outer():\n    def inner(x):\n        if x.any():\n            raise ValueError\n    return inner\n")
    text = "\n".join([
        P + f"Graph break in user code at {src}:3",
        P + "Graph Break Reason: Encountered graph break when attempting to trace CALL: a function call, e.g. f(x, y):",
        P + "",
        P + "Data-dependent branching",
        P + f"Graph break (user stack suppressed due to duplicate graph break) in user code at {src}:3",
        P + f"Graph break in user code at {tmp_path}/other.py:10",
        P + "Graph Break Reason: Dynamic shape operator",
        R + f"Recompiling function forward in {src}:2",
        R + "    triggered by the following guard failure(s):",
        R + "    - 0/0: self.seq_len_cached == 8",
        R + f"Recompiling function forward in {src}:2",
        "W1121 torch/_dynamo/convert_frame.py] torch._dynamo hit config.recompile_limit (8)",
    ])
    s = logs.parse(text, tmp_path)
    assert s.graph_breaks == 3
    top = s.break_sites[0]
    assert (top.file, top.line, top.count, top.function) == ("pkg/mod.py", 3, 2, "inner")
    assert top.reason == "Data-dependent branching"
    assert s.break_sites[1].reason == "Dynamic shape operator"
    assert s.recompiles == 2
    assert s.recompile_sites[0].reason == "0/0: self.seq_len_cached == 8"
    assert s.recompile_limit_hit


def test_clean_log():
    s = logs.parse(P + "some unrelated line\n")
    assert (s.graph_breaks, s.recompiles, s.recompile_limit_hit) == (0, 0, False)


def test_recompile_limit_names_the_function_and_its_last_guard(tmp_path: Path):
    src = tmp_path / "mod.py"
    src.write_text("def forward(x):\n    return x\n")
    W = "W1122 11:00:00.000000 4794 torch/_dynamo/convert_frame.py:1995] [0/8] "
    text = "\n".join([
        W + "torch._dynamo hit config.recompile_limit (8)",
        W + f"   function: 'forward' ({src}:1)",
        W + "   last reason: 0/7: self._host_empty == False",
        W + 'To log all recompilation reasons, use TORCH_LOGS="recompiles".',
    ])
    s = logs.parse(text, tmp_path)
    assert s.recompile_limit_hit
    (site,) = s.limit_sites
    assert (site.file, site.line, site.function) == ("mod.py", 1, "forward")
    assert site.reason == "0/7: self._host_empty == False"
