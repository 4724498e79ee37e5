"""From a Python backend: mint a connection token (PyJWT) and publish (requests)."""
import json
import os
import time

import jwt
import requests

PUSHWIRE = os.environ.get("PUSHWIRE_URL", "http://127.0.0.1:8080")
API_KEY = os.environ["PUSHWIRE_API_KEY"]  # one of the server's api.keys
SECRET = os.environ["PUSHWIRE_TOKEN_SECRET"]  # the server's auth.token_hmac_secret


def connection_token(user_id, info=None):
    """A connection token for the signed-in user; the browser sends it in `connect`."""
    claims = {"sub": user_id, "exp": int(time.time()) + 3600}
    if info is not None:
        claims["info"] = info
    return jwt.encode(claims, SECRET, algorithm="HS256")


def publish(channel, data):
    """Publishes `data` on `channel` through the HTTP API."""
    response = requests.post(
        f"{PUSHWIRE}/api/publish",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"channel": channel, "data": data},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()  # {offset, epoch} on channels with history, {} otherwise


if __name__ == "__main__":
    token = connection_token("alice", {"name": "Alice"})
    result = publish("feed:orders", {"order": 42, "status": "shipped"})
    print(json.dumps({"token": token, "result": result}))
