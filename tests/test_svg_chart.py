"""The server-drawn SVG line chart (dashboard/services/svg_chart.py) behind Train's loss curve."""

from __future__ import annotations

import base64
import math
from xml.etree import ElementTree

import pytest
from services.svg_chart import line_chart_svg, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def polylines(svg: str) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    """``{series: (values, pixel points)}`` of a chart."""
    root = ElementTree.fromstring(svg)
    return {line.get("data-series"): (
        [float(v) for v in line.get("data-y").split(",")],
        [tuple(map(float, p.split(","))) for p in line.get("points").split()])
        for line in root.iter(f"{SVG}polyline")}


def svg_series(url: str) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    """:func:`polylines` of a chart that ``st.image`` shows (a base64 data URL)."""
    assert url.startswith("data:image/svg+xml;base64,"), url[:40]
    return polylines(base64.b64decode(url.split(",", 1)[1]).decode())


@pytest.mark.parametrize(("lo", "hi", "count", "expected"), [
    (92.0, 141.0, 5, [100.0, 110.0, 120.0, 130.0, 140.0]),
    (0.9, 1.1, 5, [0.9, 0.95, 1.0, 1.05, 1.1]),
    (-3.0, 7.0, 5, [-2.0, 0.0, 2.0, 4.0, 6.0]),
    (0.5, 20.5, 8, [5.0, 10.0, 15.0, 20.0]),
    (4.0, 4.0, 5, [4.0]),
])
def test_ticks_are_round_and_inside_the_range(lo, hi, count, expected):
    assert nice_ticks(lo, hi, count) == pytest.approx(expected)


def test_the_chart_keeps_each_series_values_and_draws_lower_losses_lower():
    train = [150.0, 130.0, 120.0, 115.0]
    test = [140.0, 128.0, 121.0, 118.0]
    lines = polylines(line_chart_svg([1, 2, 3, 4], {"train_loss": train, "test_loss": test},
                                     x_label="epoch", y_label="loss", integer_x=True))
    assert list(lines) == ["train_loss", "test_loss"]
    assert lines["train_loss"][0] == train and lines["test_loss"][0] == test
    xs = [x for x, _ in lines["train_loss"][1]]
    assert xs == sorted(xs) and xs[0] < xs[-1]  # later epochs to the right
    ys = [y for _, y in lines["train_loss"][1]]
    assert ys == sorted(ys)  # SVG's y grows downward: a falling loss goes down the chart
    # every point lies inside the chart
    root = ElementTree.fromstring(line_chart_svg([1, 2], {"a": [1.0, 2.0]}, x_label="x",
                                                 y_label="y", width=400, height=200))
    for x, y in polylines(ElementTree.tostring(root, encoding="unicode"))["a"][1]:
        assert 0 < x < 400 and 0 < y < 200


def test_a_diverged_value_is_left_out_and_an_empty_chart_says_so():
    lines = polylines(line_chart_svg([1, 2, 3], {"loss": [3.0, math.nan, 1.0]}, x_label="epoch",
                                     y_label="loss"))
    assert lines["loss"][0] == [3.0, 1.0] and len(lines["loss"][1]) == 2
    empty = line_chart_svg([1], {"loss": [math.inf]}, x_label="epoch", y_label="loss")
    assert "no finite values" in empty and not polylines(empty)


def test_names_are_escaped():
    svg = line_chart_svg([1], {"<b>&": [1.0]}, x_label="a<b", y_label="c&d")
    root = ElementTree.fromstring(svg)  # parses: nothing unescaped
    assert [line.get("data-series") for line in root.iter(f"{SVG}polyline")] == ["<b>&"]


def test_the_loss_chart_names_the_unit_of_the_runs_family():
    import pandas as pd
    from services.core import loss_chart

    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [3.0, 2.0], "test_loss": [3.5, 2.5]})
    texts = {model: [t.text for t in ElementTree.fromstring(loss_chart(history, model)).iter(
        f"{SVG}text")] for model in ("vae", "diffusion", "a-family-from-elsewhere")}
    assert "loss (nats/image)" in texts["vae"] and "loss (squared error/image)" not in texts["vae"]
    assert "loss (squared error/image)" in texts["diffusion"]
    assert "loss (nats/image)" in texts["a-family-from-elsewhere"]  # the contract's unit
