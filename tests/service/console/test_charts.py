"""The SVG chart helpers: ticks, zero line, labels, text alternatives, escaping."""

import re

from service.console import charts


def test_nice_ticks_cover_the_range_with_round_steps():
    assert charts.nice_ticks(-0.05, 0.31) == [-0.1, 0.0, 0.1, 0.2, 0.3, 0.4]
    ticks = charts.nice_ticks(0.012, 0.019)
    assert ticks[0] <= 0.012 and ticks[-1] >= 0.019 and len(ticks) <= 8
    assert charts.nice_ticks(1.0, 1.0)[0] <= 1.0
    assert charts.nice_ticks(float("nan"), 1) == [0.0]


def test_forest_plot_has_zero_line_axis_label_text_alternative_and_escapes():
    svg = str(charts.forest_plot([charts.ForestRow("<b>on</b>", 0.1, 0.02, 0.18, note="winner", highlight=True),
                                  charts.ForestRow("other", None, None, None)],
                                 title="Lift", x_label="Relative lift (%)", ident="t"))
    assert svg.startswith("<svg") and 'role="img"' in svg and 'aria-labelledby="t-title t-desc"' in svg
    assert "&lt;b&gt;on&lt;/b&gt;" in svg and "<b>" not in svg
    assert "Relative lift (%)" in svg and "not computable" in svg and "winner" in svg
    desc = re.search(r"<desc[^>]*>(.*?)</desc>", svg).group(1)
    assert "+10.0 %" in desc and "+2.0 %" in desc and "+18.0 %" in desc
    assert re.search(r'stroke="#1a1a1a" stroke-width="1.5"', svg)  # the zero line
    assert "<polygon" in svg  # the highlighted row's marker is a diamond, not only a colour


def test_interval_series_draws_bands_lines_and_a_legend_per_series():
    svg = str(charts.interval_series(
        ["05-01", "05-02", "05-03"],
        [charts.Series("b vs a", [(0, 0.1, -0.1, 0.3), (1, 0.05, -0.05, 0.15), (2, 0.04, 0.0, 0.08)]),
         charts.Series("c vs a", [(0, None, None, None), (1, -0.02, -0.1, 0.06), (2, -0.01, -0.05, 0.03)])],
        title="Lift over time", y_label="Lift (%)", x_label="Day (UTC)", ident="s"))
    assert svg.count("<polyline") == 2 and svg.count('fill-opacity="0.14"') == 2
    assert 'stroke-dasharray="6 3"' in svg  # the second series differs by dash pattern too
    assert "b vs a (line: estimate; band: interval)" in svg and "Day (UTC)" in svg and "Lift (%)" in svg
    assert "+30 %" in svg or "+30.0 %" in svg
