"""Errors that carry their HTTP status; the app renders each as `{"error": "..."}`."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class MethodNotAllowed(ServiceError):
    status_code = 405


class BodyTimeout(ServiceError):
    """The body did not arrive in time; the connection is closed, since the rest of it may still come."""

    status_code = 408

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class ClientGone(ServiceError):
    """The client closed the connection mid-request; nobody reads the answer (nginx's 499)."""

    status_code = 499


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class NotReady(ServiceError):
    status_code = 503


class Overloaded(ServiceError):
    """The model's queue is full: the client should come back after Retry-After seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeout(ServiceError):
    status_code = 504


class UnprocessableEntity(ServiceError):
    """The request was valid but this model cannot give a meaningful answer for it (non-finite outputs)."""

    status_code = 422
