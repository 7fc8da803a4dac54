"""Sample-size calculator (the API's POST /tools/sample-size, as a form)."""

from flask import render_template, request

from ...auth import requires
from ...domain import experiments as experiment_domain
from ...schemas.experiments import SampleSizeSchema
from .. import bp, nav
from ..forms import FieldErrors, attempt, load, number

nav.register("Sample size", "console.sample_size", order=50)


@bp.route("/tools/sample-size", methods=["GET", "POST"])
@requires("viewer")  # a calculator: changes nothing
def sample_size():
    form = {"metric": "conversion", "baseline": "10", "stddev": "", "mde_scale": "relative", "mde": "5",
            "units_per_variation": "", "alpha": "0.05", "power": "0.8", "variations": "2"}
    result, errors, status = None, FieldErrors(), 200
    if request.method == "POST":
        form.update({k: request.form.get(k, "") for k in form})
        conversion = form["metric"] == "conversion"
        relative = form["mde_scale"] != "absolute"
        baseline = number(form["baseline"])
        mde = number(form["mde"])
        data = {
            # a conversion rate is entered in %, like a relative MDE; absolute MDEs are in the metric's units
            "baseline": baseline / 100 if conversion and isinstance(baseline, float) else baseline,
            "stddev": None if conversion else number(form["stddev"]),
            "mde": mde / 100 if isinstance(mde, float) and (relative or conversion) else mde,
            "units_per_variation": number(form["units_per_variation"], integer=True),
            "relative": relative, "alpha": number(form["alpha"]), "power": number(form["power"]),
            "variations": number(form["variations"], integer=True)}
        data = {k: v for k, v in data.items() if v is not None or k in ("stddev", "mde", "units_per_variation")}
        outcome = attempt(lambda: experiment_domain.sample_size(load(SampleSizeSchema(), data)))
        if outcome.ok:
            result = {**outcome.value, "conversion": conversion}
        else:
            errors, status = outcome.errors, 400
    return render_template("console/sample_size.html", title="Sample size", form=form, result=result,
                           errors=errors), status
