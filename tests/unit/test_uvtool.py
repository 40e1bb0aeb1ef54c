"""A failed source build's message: the tail of its output, after the error lines above it."""

from __future__ import annotations

from sitestack.core.uvtool import output_tail


def test_short_output_is_shown_whole() -> None:
    text = "gcc -c x.c\nx.c:1: error: nope\n"
    assert output_tail(text, 25) == "  gcc -c x.c\n  x.c:1: error: nope"


def test_error_lines_pushed_out_of_the_tail_come_first() -> None:
    # horovod's shape: the CMake error, then a long Python traceback.
    lines = ["-- Configuring", "CMake Error at horovod/torch/CMakeLists.txt:12 (find_package):",
             "  Could NOT find Pytorch", "-- Configuring incomplete, errors occurred!",
             "gcc -Werror=format -c y.c"]
    lines += [f'  File "setup.py", line {i}, in build' for i in range(40)]
    lines += ["subprocess.CalledProcessError: Command '['cmake', ...]' returned non-zero exit status 1."]
    out = output_tail("\n".join(lines), 25).splitlines()
    assert out[0] == "  CMake Error at horovod/torch/CMakeLists.txt:12 (find_package):"
    assert out[1] == "    Could NOT find Pytorch"
    assert out[2] == "  -- Configuring incomplete, errors occurred!"
    assert out[3] == "  ..."
    assert "Werror" not in "\n".join(out[:4])  # a flag, not an error
    assert out[-1].startswith("  subprocess.CalledProcessError")
    assert len(out) == 4 + 25


def test_no_error_lines_above_means_just_the_tail() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    out = output_tail(text, 25).splitlines()
    assert out == [f"  line {i}" for i in range(75, 100)]
