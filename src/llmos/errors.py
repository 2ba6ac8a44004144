"""llmos's exceptions: one root, `LLMOSError`, and the few families under it.

Every error llmos raises to a caller derives from one family, so a caller (the
HTTP server, the CLI, a Python user) handles families, not modules' classes:

| family          | meaning                                          | HTTP |
|-----------------|--------------------------------------------------|------|
| `NotFound`      | no such agent, user, tool, approval, server      | 404  |
| `Conflict`      | exists already, decided already                  | 409  |
| `InvalidRequest`| the caller's input cannot be served as given     | 422  |
| `Busy`          | the resource is held elsewhere; retry later      | 503  |
| `BackendError`  | a model server or embedder failed                | 502/503 |

Each family also derives from the built-in exception it refines (`LookupError`,
`ValueError`, `TimeoutError`), so code written against those
keeps working. `code` names the error in the HTTP API's error body.

Errors that never leave llmos (a failed function call returned to the model,
the window overflowing inside a step) derive from `LLMOSError` directly.
"""

from __future__ import annotations


class LLMOSError(Exception):
    """The root of every exception llmos raises."""

    code: str | None = None


class NotFound(LLMOSError, LookupError):
    """The named thing does not exist, or is not the caller's."""

    code = None


class Conflict(LLMOSError, ValueError):
    """The request conflicts with the current state (a name taken, a decision made)."""

    code = None


class InvalidRequest(LLMOSError, ValueError):
    """The caller's input cannot be served as given; nothing was changed."""

    code = None


class Busy(LLMOSError, TimeoutError):
    """The resource is held elsewhere for longer than the caller may wait."""

    code = None


class BackendError(LLMOSError):
    """A backend llmos depends on (a model server, an embedder) failed.

    `unavailable` is true when retrying later may succeed (down, rate limited,
    overloaded); false when the request itself was refused."""

    unavailable: bool = False
    #: what failed, as the HTTP API's message names it ("the embedder failed: ...")
    backend: str = "backend"
