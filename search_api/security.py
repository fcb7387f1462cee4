"""API keys: ``Authorization: Bearer <key>`` when ``EMBER_API_KEYS`` is set (else open).

Missing or non-Bearer credentials -> 401 with ``WWW-Authenticate: Bearer``; a key that is not one
of the configured keys -> 403. Keys are compared in constant time.

:func:`check_api_key` is the one check: the limits middleware runs it on the request headers
before a concurrency slot is taken or the body is read (:mod:`search_api.limits`), so a client
without a key cannot hold slots; :func:`require_api_key`, the routes' dependency, runs it again
and puts the Bearer scheme into the OpenAPI spec.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from search_api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="an API key from EMBER_API_KEYS")


def check_api_key(keys: Sequence[str], authorization: str | None) -> ApiError | None:
    """The error for an ``Authorization`` header value, or None when it may pass."""
    if not keys:
        return None
    scheme, given = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not given:
        return ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'",
            headers={"www-authenticate": "Bearer"},
        )  # fmt: skip
    # compare against every key (no early exit on a match)
    matched = [secrets.compare_digest(given.encode(), key.encode()) for key in keys]
    if not any(matched):
        return ApiError(403, "invalid API key")
    return None


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    error = check_api_key(
        request.app.state.ember.settings.api_keys, request.headers.get("authorization")
    )
    if error is not None:
        raise error
