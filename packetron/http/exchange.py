"""Answering one request: the plugin chain, the handler call, and the one error boundary.

The protocol (packetron.http.protocol) parses and decides *when* a request is answered
(strictly in arrival order); this module decides *how*. Every path that calls a handler
goes through here: `start` (plugins, then the handler inline when everything is
synchronous and the body has arrived, else one task), `call_handler` (the synchronous
call, also used when the body completes later) and `run_async`. Every exception of a
plugin or handler, and every error the router decides (404, 405, 413, 429, 501, ...),
ends in `answer_error`, where `on_error` renderers and the server's `error_format` apply.
The parser's own errors, for which no request exists yet, are answered by the protocol.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from packetron.errors import (ConnectionClosed, HttpError, MethodNotAllowed,
                              MethodNotImplemented, NotFound, ResponseAlreadySent)
from packetron.http import wire
from packetron.http.errorpages import (default_error_body, find_error_handler, reason_of,
                                       status_of)
from packetron.http.request import STAGE_AWAITING_BODY, STAGE_HANDLED, Request
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.connection import Connection

# Errors the router decides before any route is chosen.
_ROUTING_ERRORS = (NotFound, MethodNotAllowed, MethodNotImplemented)

__all__ = ["start", "call_handler", "after_sync_handler", "answer_error", "handler_failed",
           "attach_afters"]


def start(protocol: "Connection", request: Request) -> None:
    """Begin answering `request` (it is the connection's active request now)."""
    route = request.route
    global_plugins = protocol.state.global_plugins
    if route is None or request.error is not None:
        attach_afters(protocol, request)
        error = request.error or NotFound("Not Found")
        if route is None and global_plugins.befores and isinstance(error, _ROUTING_ERRORS):
            # Global plugins see requests no route serves too: a CORS preflight or an
            # auth check may answer them before the 404 / 405 / 501 does.
            if global_plugins.has_async:
                protocol.spawn(request, _run_global_chain(protocol, request, error,
                                                          global_plugins.befores))
                return
            if _chain_answered(protocol, request, global_plugins.befores):
                return
        answer_error(protocol, request, error)
        return
    local = route.plugins
    if route.local_plugins_only:
        chain = local.befores
        has_async = local.has_async
    else:
        chain = global_plugins.befores + local.befores if local.plugins else global_plugins.befores
        has_async = global_plugins.has_async or local.has_async
    attach_afters(protocol, request)
    if request.expect_continue and not request.body_complete:
        protocol.write(wire.CONTINUE_RESPONSE)
    if route.needs_task or has_async or request.streaming:
        request.stage = STAGE_HANDLED
        protocol.spawn(request, run_async(protocol, request, chain))
        return
    if _chain_answered(protocol, request, chain):
        return
    if request.body_complete or request.discard_body:
        request.stage = STAGE_HANDLED
        call_handler(protocol, request)
    else:
        request.stage = STAGE_AWAITING_BODY  # the protocol calls call_handler at its end


def _chain_answered(protocol: "Connection", request: Request, chain: tuple[Any, ...]) -> bool:
    """Run synchronous plugin handlers in order; True once one has answered (returned
    True) or failed, which then owns the answer."""
    response = request.response
    for plugin in chain:
        try:
            answered = plugin.handler(request, response)  # type: ignore[misc]
        except Exception as exc:
            handler_failed(protocol, request, exc)
            return True
        if answered is True:
            finish(protocol, request, None)
            return True
    return False


async def _run_global_chain(protocol: "Connection", request: Request, error: BaseException,
                            chain: tuple[Any, ...]) -> None:
    try:
        if await _chain_answered_async(protocol, request, chain):
            return
    except ConnectionClosed:
        return
    except Exception as exc:
        handler_failed(protocol, request, exc)
        return
    answer_error(protocol, request, error)


async def _chain_answered_async(protocol: "Connection", request: Request,
                                chain: tuple[Any, ...]) -> bool:
    """Run plugin handlers (sync or async) in order; True once one has answered. An
    exception is the caller's to turn into an answer."""
    for plugin in chain:
        answered = plugin.handler(request, request.response)
        if inspect.isawaitable(answered):
            answered = await answered
        if answered is True:
            finish(protocol, request, None)
            return True
    return False


def attach_afters(protocol: "Connection", request: Request) -> None:
    """Give the response the after-hooks that apply to it: its route's (unless
    LOCAL_PLUGINS_ONLY) and the global ones, which also see the server's own answers."""
    global_afters = protocol.state.global_plugins.afters
    route = request.route
    if route is None:
        afters = global_afters
    else:
        local_afters = route.plugins.afters
        if route.local_plugins_only or not global_afters:
            afters = local_afters
        elif not local_afters:
            afters = global_afters
        else:  # each side is sorted already; only together do they need a sort
            afters = _by_priority(global_afters + local_afters)
    if afters:
        request.response.use_after_hooks(afters)


def _by_priority(afters: tuple[Any, ...]) -> tuple[Any, ...]:
    # Stable: equal priorities keep global before route, each in insertion order.
    return tuple(sorted(afters, key=lambda p: -p.priority))


def call_handler(protocol: "Connection", request: Request) -> None:
    """Call a synchronous route's handler (plugins done, body complete or not needed)."""
    route = request.route
    assert route is not None
    response = request.response
    try:
        result = route.handler(request, response)
    except Exception as exc:
        handler_failed(protocol, request, exc)
        return
    if response.sent or response.pending:
        return  # the common case: the handler answered
    after_sync_handler(protocol, request, result)


def after_sync_handler(protocol: "Connection", request: Request, result: Any) -> None:
    """A synchronous handler returned without answering: await what it returned, send
    it as the payload, or answer 500."""
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        protocol.spawn(request, _await_result(protocol, request, result))
        return
    finish(protocol, request, result)


async def _await_result(protocol: "Connection", request: Request, result: Any) -> None:
    try:
        finish(protocol, request, await result)
    except ConnectionClosed:
        pass  # the client left; nobody is there to answer
    except Exception as exc:
        handler_failed(protocol, request, exc)


async def run_async(protocol: "Connection", request: Request, chain: tuple[Any, ...]) -> None:
    """The plugin chain and the handler, in one task."""
    response = request.response
    route = request.route
    assert route is not None
    try:
        if await _chain_answered_async(protocol, request, chain):
            return
        if route.is_async:
            result = await route.handler(request, response)
        else:
            await request._prepare_for_sync_handler()
            result = route.handler(request, response)
            if inspect.isawaitable(result):
                result = await result
        finish(protocol, request, result)
    except ConnectionClosed:
        pass  # the client left; nobody is there to answer
    except Exception as exc:
        handler_failed(protocol, request, exc)


def finish(protocol: "Connection", request: Request, result: Any) -> None:
    """After the handler (or a short-circuiting plugin): send its return value, if it
    answered nothing itself; a handler that does neither gets a 500."""
    response = request.response
    if response.sent or response.pending:
        return
    if result is not None:
        response.send(result)  # a handler may simply return its payload
        return
    server_logger.error("%s %s: the handler returned without sending a response",
                        request.method, request.path)
    answer_error(protocol, request, HttpError("Internal Server Error: no response was sent"))


def handler_failed(protocol: "Connection", request: Request, exc: BaseException) -> None:
    """A plugin or handler raised: log what is unexpected, then answer through the
    boundary."""
    if isinstance(exc, ResponseAlreadySent):
        server_logger.error("%s %s: %s", request.method, request.path, exc)
        return
    if not isinstance(exc, HttpError):
        server_logger.error("%s %s: handler raised", request.method, request.path,
                            exc_info=exc)
    answer_error(protocol, request, exc)


def answer_error(protocol: "Connection", request: Request, exc: BaseException) -> None:
    """The one error boundary: `exc` becomes the answer to `request`.

    Headers the handler set are dropped (an after-plugin sets what every answer must
    carry); the error's own headers (Allow, Retry-After, ...) are kept. A renderer from
    `on_error` answers if one matches; if it raises or sends nothing, the plain answer
    (text, or JSON with error_format="json") goes out instead.
    """
    response = request.response
    if response.sent:
        # Half a response is out; the only honest ending is to cut the connection.
        if not response.finished:
            protocol.close_now()
        return
    response.pending = False
    if not request.body_complete and not request.discard_body and request.has_body():
        # A body we will not read: the connection cannot find the next request after it.
        # (Bodies of refused requests the parser discards, and requests without one,
        # keep the connection.)
        request.keep_alive = False
    response.reset_headers(getattr(exc, "headers", ()))
    app = protocol.state.app
    renderer = find_error_handler(app.error_handlers, exc) if app is not None else None
    if renderer is not None:
        try:
            result = renderer(request, response, exc)
        except Exception as render_exc:
            _renderer_failed(request, render_exc)
        else:
            if inspect.isawaitable(result):
                protocol.spawn(request, _await_renderer(protocol, request, exc, result))
                return
            if response.sent or response.pending:
                return
        response.reset_headers(getattr(exc, "headers", ()))
    send_plain_error(protocol, request, exc)


async def _await_renderer(protocol: "Connection", request: Request, exc: BaseException,
                          result: Any) -> None:
    response = request.response
    try:
        await result
    except ConnectionClosed:
        return
    except Exception as render_exc:
        _renderer_failed(request, render_exc)
    if response.sent or response.pending:
        return
    response.reset_headers(getattr(exc, "headers", ()))
    send_plain_error(protocol, request, exc)


def _renderer_failed(request: Request, exc: BaseException) -> None:
    server_logger.error("%s %s: the error handler raised; sending the plain answer",
                        request.method, request.path, exc_info=exc)


def send_plain_error(protocol: "Connection", request: Request, exc: BaseException) -> None:
    """The server's own answer for an error, in the configured error_format."""
    status = status_of(exc)
    content_type, body = default_error_body(status, reason_of(exc),
                                            protocol.state.options.error_format)
    request.response._send(status, content_type, body)
