"""The loss-curve PNG of a run (`training/dashboard.py`): what the axis shows, not pixels."""

from __future__ import annotations

import json

from aethermind.training.dashboard import loss_figure, plot_losses


def _records() -> list[dict]:
    # A demo-like curve: ~7 nats at the start, under 1 late, validation every 50 steps.
    return [{"step": s, "loss": 7.0 / s ** 0.5, **({"val_loss": 8.0 / s ** 0.5} if s % 50 == 0
                                                   else {})} for s in range(1, 201)]


def test_loss_curve_uses_a_log_axis_with_plain_number_labels():
    fig = loss_figure(_records())
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # the late drop in val loss stays visible
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)}
    assert {"0.5", "1", "2", "5"} <= labels  # not 10^0 / 5e-01
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "val loss"]


def test_plot_losses_writes_a_png_and_skips_an_empty_run(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert plot_losses(metrics, tmp_path / "a.png") == tmp_path / "a.png"
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_losses(tmp_path / "empty.jsonl", tmp_path / "b.png") is None
