"""The error catalogue of the v2 API: code, default message and HTTP status, as CNCF Distribution defines them.

Only the codes this server raises are listed.

The registry logic raises `RegistryError(CODE, detail)`; the HTTP layer renders it as
`{"errors": [{"code", "message", "detail"}]}` with the code's status, so clients see the codes they know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

JSONValue: TypeAlias = str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
"""What a response body can carry as JSON: an error's detail must be one (a `Digest` is rendered with `str()`)."""


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    message: str
    status: int


BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = ErrorCode("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = ErrorCode("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
MANIFEST_BLOB_UNKNOWN = ErrorCode("MANIFEST_BLOB_UNKNOWN", "manifest references a blob unknown to registry", 400)
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", "manifest unknown", 404)
NAME_INVALID = ErrorCode("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = ErrorCode("SIZE_INVALID", "provided length did not match content length", 400)
TAG_INVALID = ErrorCode("TAG_INVALID", "manifest tag did not match URI", 400)
UNSUPPORTED = ErrorCode("UNSUPPORTED", "The operation is unsupported.", 405)
RANGE_INVALID = ErrorCode("RANGE_INVALID", "invalid content range", 416)
PAGINATION_NUMBER_INVALID = ErrorCode("PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400)
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", "authentication required", 401)
DENIED = ErrorCode("DENIED", "requested access to the resource is denied", 403)
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", "too many requests", 429)
NOT_FOUND = ErrorCode("NOT_FOUND", "no such API endpoint", 404)
UNKNOWN = ErrorCode("UNKNOWN", "unknown error", 500)
UNAVAILABLE = ErrorCode("UNAVAILABLE", "service unavailable", 503)
OUT_OF_SPACE = ErrorCode("UNAVAILABLE", "the registry is out of storage space", 507)
"""No `Retry-After`: retrying does not help until an operator frees space (deletes keep working meanwhile)."""


class RegistryError(Exception):
    """An error the client caused or must know about; `status` overrides the code's default when the spec asks."""

    def __init__(
        self,
        error: ErrorCode,
        detail: JSONValue = None,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or error.message)
        self.error = error
        self.detail = detail
        self.message = message or error.message
        self.status = status or error.status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.error.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}


def blob_being_deleted() -> RegistryError:
    """A blob garbage collection is deleting: its file may be gone already, so it is neither linked nor taken as
    present; the collection ends within seconds (or a dead one's deletions are finished as soon), then it can be."""
    return RegistryError(
        UNAVAILABLE, "garbage collection is deleting this blob; try again", headers={"Retry-After": "5"}
    )
