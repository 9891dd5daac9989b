"""One progress reporter for replay, retrain, evaluate and the demo: a bar on a terminal, plain
periodic lines for a log."""

from __future__ import annotations

import io

from daemon.report.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_steps(progress: Progress, clock: Clock, steps: int = 40) -> None:
    for i in range(1, steps + 1):
        clock.now += 0.5
        progress.update(f"consumed {i}/{steps} bars", i / steps)
    progress.line(f"  consumed {steps}/{steps} bars")


def test_off_a_terminal_progress_is_plain_lines_every_few_seconds():
    stream, clock = io.StringIO(), Clock()
    run_steps(Progress(stream, every_s=5.0, clock=clock), clock)  # 20 s of work
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # one line per 5 s of the 20, then the closing line; each whole, none glued to another
    assert lines == [
        "  consumed 10/40 bars (25%)",
        "  consumed 20/40 bars (50%)",
        "  consumed 30/40 bars (75%)",
        "  consumed 40/40 bars (100%)",
        "  consumed 40/40 bars",
    ]


def test_a_short_step_off_a_terminal_shows_only_its_closing_line():
    stream, clock = io.StringIO(), Clock()
    run_steps(Progress(stream, every_s=5.0, clock=clock), clock, steps=4)
    assert stream.getvalue() == "  consumed 4/4 bars\n"


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_cleared_for_a_line():
    stream, clock = io.StringIO(), Clock()
    run_steps(Progress(stream, tty=True, redraw_s=0.5, clock=clock), clock, steps=4)
    text = stream.getvalue()
    assert text.count("\r\x1b[K[") == 4  # every redraw starts at the line's beginning
    assert "[###############...............] consumed 2/4 bars" in text
    assert text.endswith("\r\x1b[K  consumed 4/4 bars\n")  # the bar is wiped first


def test_stderr_of_a_pipe_is_not_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as handle:
        assert Progress(handle).terminal is False
