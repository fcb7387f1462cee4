"""API keys: ``Authorization: Bearer <key>`` when ``EMBER_API_KEYS`` is set (else open).

Missing or non-Bearer credentials -> 401 with ``WWW-Authenticate: Bearer``; a key that is not one
of the configured keys -> 403. Keys are compared in constant time.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from search_api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="an API key from EMBER_API_KEYS")


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    keys: list[str] = request.app.state.ember.settings.api_keys
    if not keys:
        return
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'",
            headers={"www-authenticate": "Bearer"},
        )  # fmt: skip
    given = credentials.credentials.encode()
    # compare against every key (no early exit on a match)
    matched = [secrets.compare_digest(given, key.encode()) for key in keys]
    if not any(matched):
        raise ApiError(403, "invalid API key")
