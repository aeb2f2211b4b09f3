"""Read a server's monitoring endpoints (``/varz``, ``/jsz``, ...) as plain dicts."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

# what a server that is starting, stopping or frozen may answer instead of JSON: "not yet"
NOT_ANSWERING = (OSError, ValueError, http.client.HTTPException)


def fetch(monitor_url: str, endpoint: str, timeout: float = 5.0, **params) -> dict:
    """GET ``monitor_url/endpoint?params`` and decode the JSON reply.

    ``healthz`` answers 503 with a JSON body while the server is not healthy; that body is
    returned too (with its ``status``), since "not healthy yet" is an answer, not an error.
    Boolean params become ``true``/``false`` as the server expects.
    """
    endpoint = endpoint.strip("/")
    query = urllib.parse.urlencode({k: (str(v).lower() if isinstance(v, bool) else v)
                                    for k, v in params.items()})
    url = f"{monitor_url.rstrip('/')}/{endpoint}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        body = err.read()
        if not body:
            raise
    return json.loads(body or b"{}")


def monitor(target, endpoint: str, **params) -> dict:
    """``target`` is a natslab server or a monitoring URL such as ``http://127.0.0.1:8222``."""
    url = getattr(target, "monitor_url", target)
    return fetch(url, endpoint, **params)
