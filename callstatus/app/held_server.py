"""The `callstatus serve` that holds the database, as seen by the commands that write through it
(`reconcile`, `erase`): where it listens and its token come from settings.server_file (written
by callstatus.app.runtime), and a refusal or a silence becomes an error that says what to do."""

from __future__ import annotations

import json
import sys
from typing import Any

import requests

from callstatus.core.errors import CommandError
from callstatus.core.settings import Settings


def ask(settings: Settings, path: str, **request: Any) -> requests.Response:
    """POST `path` to the server that holds settings.db, authorised as the user who started it;
    a 200 answer or a CommandError. `request` goes to requests.post (params, json, stream)."""
    url, token = _where(settings)
    print(f"callstatus: the server at {url} holds {settings.db}: asking it", file=sys.stderr)
    try:
        response = requests.post(
            f"{url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=(5, None),
            **request,
        )
    except requests.RequestException as exc:
        raise CommandError(
            f"{settings.db} is held by another process, and no callstatus server answers at "
            f"{url} ({type(exc).__name__}): stop that process or start `callstatus serve`"
        ) from exc
    if response.status_code != 200:
        with response:
            raise CommandError(f"the server refused: {_message(response)}")
    return response


def _where(settings: Settings) -> tuple[str, str]:
    path = settings.server_file
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return str(info["url"]), str(info["token"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(
            f"{settings.db} is held by another process, but {path} does not say which server: "
            "if a `callstatus serve` holds it, restart it with this version; otherwise stop the "
            "process that holds the file"
        ) from exc


def _message(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
