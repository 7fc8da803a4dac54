"""The Flask application class: one transaction per request, committed last.

Domain functions end their unit of work with ``unit_of_work.commit()``; during
a request that only flushes. :class:`PitcrewFlask` commits after the view's
return value has been turned into a response (for flask-smorest views: after
the schema has dumped the body), so serialisation errors roll back instead of
following a committed write. Errors raised by the commit itself (a unique or
version conflict, a database outage) reach the registered error handlers like
any other exception. Any error of a request (in a view or in a
``before_request`` hook) rolls the session back before the error handlers
(service/errors.py) build the response.
"""

import logging

from flask import Flask

from .domain import unit_of_work
from .extensions import db

log = logging.getLogger("pitcrew.errors")


class PitcrewFlask(Flask):
    def dispatch_request(self):
        try:
            with unit_of_work.deferred() as work:
                response = self.make_response(super().dispatch_request())
            if work.pending:
                db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        return response

    def handle_user_exception(self, e):
        try:
            db.session.rollback()
        except Exception:  # a dead connection cannot roll back; the pool discards it
            log.debug("rollback failed", exc_info=True)
        return super().handle_user_exception(e)
