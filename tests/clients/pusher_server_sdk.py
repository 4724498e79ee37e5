"""Drives the official Python `pusher` server SDK, unchanged, against a pushwire node.

argv[1]: JSON {host, port, appId, key, secret, calls: [[method, *args], ...]}. Each call
is made in order; one JSON line per call on stdout: {"call", "status": 200, "body"} or
{"call", "status", "error"}, the status taken from the SDK's exception class.
"""

import json
import sys

import pusher
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus, PusherForbidden

config = json.loads(sys.argv[1])
client = pusher.Pusher(
    app_id=config["appId"],
    key=config["key"],
    secret=config["secret"],
    host=config["host"],
    port=config["port"],
    ssl=False,
)

STATUS = {PusherBadRequest: 400, PusherBadAuth: 401, PusherForbidden: 403}

for method, *args in config["calls"]:
    try:
        body = getattr(client, method)(*args)
        line = {"call": method, "status": 200, "body": body}
    except (PusherBadRequest, PusherBadAuth, PusherForbidden) as error:
        line = {"call": method, "status": STATUS[type(error)], "error": str(error)}
    except PusherBadStatus as error:
        status = str(error).split(":", 1)[0]
        line = {"call": method, "status": int(status) if status.isdigit() else None, "error": str(error)}
    print(json.dumps(line), flush=True)
