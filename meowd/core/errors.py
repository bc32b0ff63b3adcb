"""Errors that cross the socket. Each has a stable `code` a script can match on."""


class MeowError(Exception):
    """Base error; `code` travels with the message in error replies."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(MeowError):
    """The bytes on the wire are not a valid frame or message."""

    code = "protocol"


class FrameTooLarge(ProtocolError):
    """A frame header announced more bytes than we accept; the stream cannot resync."""

    code = "frame_too_large"


class BadRequest(MeowError):
    """A well-formed message whose content is wrong (unknown op, bad field, bad value)."""

    code = "bad_request"


class NotFound(MeowError):
    code = "not_found"


class Conflict(MeowError):
    """The request clashes with existing state (e.g. a duplicate task name)."""

    code = "conflict"


class Refused(MeowError):
    """The request can never succeed here (e.g. needs a GPU on a machine with none)."""

    code = "refused"


class PermissionDenied(MeowError):
    code = "permission_denied"


class StoreUnavailable(MeowError):
    """The state cannot be written (disk full, read-only): the request changed nothing."""

    code = "store_unavailable"


ERRORS_BY_CODE = {
    cls.code: cls
    for cls in (MeowError, ProtocolError, FrameTooLarge, BadRequest, NotFound, Conflict, Refused,
                PermissionDenied, StoreUnavailable)
}
