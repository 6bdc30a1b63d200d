"""Rendering DOT text to SVG with Graphviz's `dot`, when it is installed."""

from __future__ import annotations

import shutil
import subprocess

from rrwatch.errors import ExitStatus, RrwatchError


class GraphvizError(RrwatchError):
    """Graphviz failed to render."""


class GraphvizMissing(GraphvizError):
    """Graphviz's `dot` program is not on PATH."""

    status = ExitStatus.UNAVAILABLE


def svg(dot_text: str, *, engine: str | None = None, timeout: float = 60) -> bytes:
    """Render DOT as SVG with Graphviz; `engine` picks the layout (`-K`: dot, fdp, neato, …).

    Blocks for as long as Graphviz runs (at most `timeout` seconds): from trio, call it in a
    thread.
    """
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing("Graphviz is not installed (no `dot` on PATH); "
                              "install it, or print DOT instead of SVG")
    args = [program, "-Tsvg", *([f"-K{engine}"] if engine else [])]
    try:
        done = subprocess.run(args, input=dot_text.encode(), capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"Graphviz took longer than {timeout:g} s") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise GraphvizError(f"Graphviz failed: {reason}")
    return done.stdout
