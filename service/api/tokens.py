from flask.views import MethodView

from ..auth import actor, requires
from ..domain import tokens as domain
from ..extensions import Blueprint
from ..schemas.tokens import (
    TokenCreatedSchema,
    TokenCreateSchema,
    TokenPageSchema,
    TokenQuerySchema,
)
from .common import page

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens", description="Admin API tokens (admin only).")


@blp.route("")
class Tokens(MethodView):
    @requires("admin")
    @blp.arguments(TokenQuerySchema, location="query")
    @blp.response(200, TokenPageSchema)
    def get(self, query):
        """List tokens (never their secrets)"""
        return page(domain.list_tokens(**query))

    @requires("admin")
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenCreatedSchema)
    def post(self, data):
        """Create a token; the secret is shown only in this response"""
        token, secret = domain.create_token(actor(), data["name"], data["role"])
        return {"id": token.id, "name": token.name, "role": token.role, "token": secret}


@blp.route("/<int:token_id>")
class TokenItem(MethodView):
    @requires("admin")
    @blp.response(204)
    def delete(self, token_id):
        """Revoke a token"""
        domain.revoke_token(actor(), token_id)
