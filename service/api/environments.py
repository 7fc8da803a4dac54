from flask.views import MethodView

from ..auth import actor, requires
from ..domain import environments as domain
from ..domain import tokens as token_domain
from ..extensions import Blueprint
from ..schemas.common import PageQuerySchema
from ..schemas.environments import (
    EnvironmentPageSchema,
    EnvironmentPatchSchema,
    EnvironmentSchema,
    SdkKeyCreatedSchema,
    SdkKeyCreateSchema,
)
from .common import etag, if_match, page

blp = Blueprint("environments", __name__, url_prefix="/api/v1/environments",
                description="Environments and their SDK keys.")


@blp.route("")
class Environments(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, EnvironmentPageSchema)
    def get(self, query):
        """List environments"""
        return page(domain.list_environments(**query))

    @requires("admin")
    @blp.arguments(EnvironmentSchema)
    @blp.response(201, EnvironmentSchema)
    def post(self, data):
        """Create an environment (admin)"""
        env = domain.create(actor(), data)
        return env, 201, etag(env.version)


@blp.route("/<string:env>")
class EnvironmentItem(MethodView):
    @blp.response(200, EnvironmentSchema)
    def get(self, env):
        """Get an environment"""
        environment = domain.get(env)
        return environment, 200, etag(environment.version)

    @requires("admin")
    @blp.arguments(EnvironmentPatchSchema)
    @blp.response(200, EnvironmentSchema)
    def patch(self, changes, env):
        """Update an environment (admin)"""
        environment = domain.update(actor(), env, changes, if_match())
        return environment, 200, etag(environment.version)

    @requires("admin")
    @blp.response(204)
    def delete(self, env):
        """Delete an environment and everything in it (admin)"""
        domain.delete(actor(), env, if_match())


@blp.route("/<string:env>/sdk-keys")
class SdkKeys(MethodView):
    @requires("admin")
    @blp.arguments(SdkKeyCreateSchema, required=False)
    @blp.response(201, SdkKeyCreatedSchema)
    def post(self, data, env):
        """Create an SDK key for the environment (admin); the key is shown only here"""
        key, secret = token_domain.create_sdk_key(actor(), domain.get(env), data.get("name", ""))
        return {"id": key.id, "environment": env, "key": secret}


@blp.route("/<string:env>/sdk-keys/<int:key_id>")
class SdkKeyItem(MethodView):
    @requires("admin")
    @blp.response(204)
    def delete(self, env, key_id):
        """Revoke an SDK key (admin)"""
        token_domain.revoke_sdk_key(actor(), domain.get(env), key_id)
