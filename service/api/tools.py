from flask.views import MethodView

from ..auth import requires
from ..domain import experiments as domain
from ..extensions import Blueprint
from ..schemas.experiments import SampleSizeResultSchema, SampleSizeSchema

blp = Blueprint("tools", __name__, url_prefix="/api/v1/tools", description="Experiment planning tools.")


@blp.route("/sample-size")
class SampleSize(MethodView):
    @requires("viewer")  # a calculator: changes nothing
    @blp.arguments(SampleSizeSchema)
    @blp.response(200, SampleSizeResultSchema)
    def post(self, data):
        """Power calculator: units per variation for an MDE, or the MDE for a number of units

        ``baseline`` is a conversion rate (without ``stddev``) or a mean (with
        the per-unit ``stddev``); ``mde`` is relative (0.05 = +5 %) unless
        ``relative`` is false. alpha is split (Bonferroni) over the
        ``variations - 1`` comparisons with control.
        """
        return domain.sample_size(data)
