"""`patchunet serve`: MLflow's scoring server for a registered model, every error in one line.

`mlflow models serve` answers some bad requests with the server's stack trace (a `text/csv` body)
or with the request echoed back (malformed JSON; every error the model raises comes prefixed with
the input it was given). This wraps the same server (`mlflow.pyfunc.scoring_server.init`: the same
`/invocations` protocol, `/ping`, `/health`, `/version`) and answers instead, before MLflow sees the
request, a body that is not a JSON object, or that names a param the model does not take; and
turns any error answer into `{"error_code": ..., "message": <one line>}`: no trace, no echo.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from patchunet.errors import TrackingError, first_line

if TYPE_CHECKING:
    from fastapi import FastAPI

INVOCATIONS = "/invocations"
JSON_TYPE = "application/json"
EXAMPLE = '{"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}}'
MAX_MESSAGE_CHARS = 300
"""An error line is cut here: a message MLflow builds from the request cannot echo it whole."""
CAUSE_MARK = "Error: "
"""What MLflow puts between its echo of the input and the cause: `Failed to predict data '<the
input>'. \\nError: <the model's line>`, `Failed to enforce schema of data '<the input>' ... Error: <why>`."""


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

    return app


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
