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


def _y(svg: str, y_value_label: str) -> float:
    """The y pixel of a tick (its label sits 4 px below it)."""
    label = re.search(r'<text x="\d+" y="([\d.]+)" text-anchor="end"[^>]*>' + re.escape(y_value_label), svg)
    return float(label.group(1)) - 4


def test_guardrail_plot_marks_the_harm_side_the_steps_and_the_checks_that_found_harm():
    checks = [charts.Check("11-30 10:00", -0.01, -0.30, 0.28, False, "10 %"),
              charts.Check("11-30 10:05", -0.05, -0.12, 0.02, False, "10 %"),
              charts.Check("11-30 11:00", -0.09, -0.15, -0.03, True, "25 %")]
    svg = str(charts.guardrail_plot(checks, title="Guardrail <purchases>", y_label="Lift, on − off (pct. points)",
                                    x_label="Check", harm_below=True, harm_text="on below off; higher is better",
                                    ident="g", fmt=charts.points))
    assert 'role="img"' in svg and "Guardrail &lt;purchases&gt;" in svg
    desc = re.search(r"<desc[^>]*>(.*?)</desc>", svg).group(1)
    assert "3 check(s)" in desc and "-9.00 pts" in desc and "Harm found at check 3 (11-30 11:00)" in desc
    assert "▼ harm side: on below off; higher is better" in svg
    # The shaded harm region starts at the zero line and goes down (harm is a negative lift).
    rect = re.search(r'<rect x="\d+" y="([\d.]+)" width="\d+" height="([\d.]+)" fill="#a4243b"', svg)
    zero = _y(svg, "0<")
    assert abs(float(rect.group(1)) - zero) < 0.2 and float(rect.group(2)) > 10
    assert "step 10 %" in svg and "step 25 %" in svg and 'stroke-dasharray="3 3"' in svg  # one step boundary
    assert svg.count('fill="#a4243b"/>') >= 1 and "<polygon" in svg  # the harm check is a triangle
    assert "+10 pts" in svg or "+10.0 pts" in svg or "+20 pts" in svg  # short tick labels in points
    # A metric where lower is better: harm is above zero.
    up = str(charts.guardrail_plot(checks[:1], title="t", y_label="y", x_label="x", harm_below=False,
                                   harm_text="on above off; lower is better", ident="u"))
    assert "▲ harm side" in up and "No check found harm" in up
    rect = re.search(r'<rect x="\d+" y="([\d.]+)" width="\d+" height="([\d.]+)" fill="#a4243b"', up)
    assert float(rect.group(1)) < _y(up, "0<")


def test_guardrail_plot_without_an_estimate_says_so():
    svg = str(charts.guardrail_plot([charts.Check("t", None, None, None, False, "5 %")], title="t", y_label="y",
                                    x_label="x", harm_below=True, harm_text="h"))
    assert "not enough data for an estimate yet" in svg and "<polyline" not in svg
    assert str(charts.guardrail_plot([], title="t", y_label="y", x_label="x", harm_below=True,
                                     harm_text="h")).count("<svg") == 1
