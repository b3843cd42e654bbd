"""API keys with roles: who may call which route of the gateway.

Roles: ``reader`` (every read), ``writer`` (reader + writes), ``operator`` (writer + region
status changes). Route code sees the caller as ``PrincipalDep`` (``key_id``, ``role``).
"""

from regionstore_gateway.auth.authenticator import Authenticator, AuthUnavailableError, Limits
from regionstore_gateway.auth.dependencies import (
    PrincipalDep,
    check_routes,
    requires_operator,
    requires_reader,
    requires_writer,
)
from regionstore_gateway.auth.roles import Principal, Role

__all__ = [
    "AuthUnavailableError",
    "Authenticator",
    "Limits",
    "Principal",
    "PrincipalDep",
    "Role",
    "check_routes",
    "requires_operator",
    "requires_reader",
    "requires_writer",
]
