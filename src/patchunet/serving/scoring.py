"""`patchunet serve`: MLflow's scoring server for a registered model, every error in one line.

`mlflow models serve` answers some bad requests with the server's stack trace (a `text/csv` body)
or with the request echoed back (malformed JSON; every error the model raises comes prefixed with
the input it was given). This wraps the same server (`mlflow.pyfunc.scoring_server.init`: the same
`/invocations` protocol, `/ping`, `/health`, `/version`) and answers instead, before MLflow sees the
request, a body that is not a JSON object, or that names a param the model does not take; and
turns any error answer into `{"error_code": ..., "message": <one line>}`: no trace, no echo.

Before any of that, a request body over `max_request_bytes` of the model's `serve` settings is
refused with 413, unread: by its Content-Length, or, sent without one (chunked), as soon as the bytes
received pass the cap. Nothing else bounds what the server holds in memory for one request.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from patchunet.core.config import ServeConfig
from patchunet.core.errors import TrackingError, first_line

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

INVOCATIONS = "/invocations"
JSON_TYPE = "application/json"
EXAMPLE = '{"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}}'
MAX_MESSAGE_CHARS = 300
"""An error line is cut here: a message MLflow builds from the request cannot echo it whole."""
CAUSE_MARK = "Error: "
"""What MLflow puts between its echo of the input and the cause: `Failed to predict data '<the
input>'. \\nError: <the model's line>`, `Failed to enforce schema of data '<the input>' ... Error: <why>`."""
IMAGE_CONTAINER_SLACK = 1.02
"""An uncompressed PNG or TIFF holds a little more than its pixels: row filter bytes, chunk and tag headers."""
JSON_SLACK_BYTES = 1 << 20
"""The request's JSON around its images: keys, quotes, params."""


def max_request_bytes(serve: ServeConfig) -> int:
    """The largest request body the server reads: `serve.max_images` images of `serve.max_image_side`
    px on a side, RGB and uncompressed (no image the model takes is larger), in base64, plus
    JSON_SLACK_BYTES. A larger body could only hold images the model refuses anyway."""
    image = math.ceil(serve.max_image_side**2 * 3 * IMAGE_CONTAINER_SLACK)
    return serve.max_images * math.ceil(image * 4 / 3) + JSON_SLACK_BYTES


def scoring_app(model_uri: str) -> FastAPI:
    """The scoring server's app for the pyfunc at `model_uri`, its errors in one line."""
    import mlflow.pyfunc
    from fastapi import Request
    from fastapi.responses import Response
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise TrackingError(f"{model_uri}: cannot load the model: {first_line(exc)}") from None
    if "serve" not in model.model_config:
        raise TrackingError(f"{model_uri}: no `serve` settings in its model config; serve a model `register` logged")
    app = scoring_server.init(model)
    params_schema = model.metadata.get_params_schema()
    known_params = sorted(spec.name for spec in params_schema.params) if params_schema else []

    @app.middleware("http")  # added last, so it sees every answer, MLflow's timeout (504) included
    async def one_line_errors(request: Request, call_next) -> Response:
        if request.url.path == INVOCATIONS and request.method == "POST":
            refusal = request_problem(request.headers.get("content-type", ""), await request.body(), known_params)
            if refusal:
                return error_response(*refusal)
        answer = await call_next(request)
        if answer.status_code < 400:
            return answer
        body = b"".join([chunk async for chunk in answer.body_iterator])
        return error_response(answer.status_code, error_line(body))

    # added after one_line_errors, so it runs before it: before any body is read
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes(ServeConfig(**model.model_config["serve"])))
    return app


class BodyTooLarge(Exception):
    """A request body that passed the cap while it streamed in."""


class BodySizeLimit:
    """ASGI middleware: a request whose body is over `max_bytes` gets 413 in one line, read no further."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self.refuse(scope, receive, send)
            return
        received, answering = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if answering:  # too late for a 413: the server drops the connection
                raise
            await self.refuse(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        line = (
            f"request body: over {self.max_bytes / 1e6:.1f} MB, more than serve.max_images uncompressed "
            "images of serve.max_image_side px take in base64; send fewer or smaller images"
        )
        await error_response(413, line)(scope, receive, send)


def request_problem(content_type: str, body: bytes, known_params: list[str]) -> tuple[int, str] | None:
    """(HTTP status, one line) for a request refused before the model sees it; None for one to serve."""
    mime_type = content_type.split(";")[0].strip().lower()
    if mime_type != JSON_TYPE:
        return 415, f"Content-Type {mime_type or 'missing'}: send {JSON_TYPE}, such as {EXAMPLE}"
    try:
        request = json.loads(body)
    except UnicodeDecodeError:
        return 400, "request body: not UTF-8 text"
    except json.JSONDecodeError as exc:
        return 400, f"request body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if not isinstance(request, dict):
        return 400, f"request body: a JSON {type(request).__name__}; expected an object, such as {EXAMPLE}"
    params = request.get("params", {})
    if not isinstance(params, dict):
        return 400, f'params: a JSON {type(params).__name__}; expected an object, such as {{"mpp": 0.25}}'
    if unknown := sorted(set(params) - set(known_params)):
        names = ", ".join(map(str, unknown))[:80]
        return 400, f"params {names}: unknown; the model takes {', '.join(known_params) or 'no params'}"
    return None


def error_line(body: bytes) -> str:
    """The one line to answer for an error answer's `body`: the cause MLflow gives after its echo
    of the input (a model's own line), else the first line of MLflow's, never its stack trace; cut at
    MAX_MESSAGE_CHARS."""
    text = body.decode("utf-8", errors="replace")
    try:
        message = str(json.loads(text).get("message", ""))
    except (ValueError, AttributeError):  # not JSON, or not an object: a plain-text answer
        message = text
    if "\n" + CAUSE_MARK in message:  # a model's own line may hold "Error: " itself
        message = message.rsplit("\n" + CAUSE_MARK, 1)[1]
    if "\n" in message.strip() and CAUSE_MARK in message:  # MLflow's own cause after another echo
        message = message.rsplit(CAUSE_MARK, 1)[1]
    line = message.strip().splitlines()[0].strip() if message.strip() else "request failed"
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 1] + "…"


def error_response(status: int, line: str):
    from fastapi.responses import JSONResponse

    code = "INVALID_PARAMETER_VALUE" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": line}, status_code=status)


def serve(model_uri: str, host: str, port: int) -> None:
    """Serve the pyfunc at `model_uri` on `host`:`port` until stopped (one worker)."""
    import uvicorn

    uvicorn.run(scoring_app(model_uri), host=host, port=port, workers=1)
