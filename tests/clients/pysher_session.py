"""Drives pysher (the Python WebSocket client for Pusher), unchanged, against a pushwire
node's /app/{key}: connect, a public channel, a private channel signed by pysher itself
with the app secret (and one with a wrong signature), and a presence channel with two
users (member_added, a client event, member_removed).

argv: port key secret. Prints one JSON line per observation; the Rust test
(tests/pusher_clients.rs) triggers the server events when it reads the "ready" lines.
Every wait is bounded; a missing event ends the script with an error.
"""

import json
import os
import queue
import sys

import pysher
import pysher.pusher
from pysher.channel import Channel

port, key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
WAIT = 20


def out(value):
    print(json.dumps(value), flush=True)


def client(user):
    return pysher.Pusher(
        key,
        secret=secret,
        secure=False,
        custom_host="127.0.0.1",
        port=port,
        user_data={"user_id": user, "user_info": {"name": user.title()}},
    )


def waiter(target, event):
    """A queue that receives the data of every `event` on `target` (channel or connection)."""
    received = queue.Queue()
    target.bind(event, received.put)
    return received


def get(received, what):
    try:
        return received.get(timeout=WAIT)
    except queue.Empty:
        sys.exit(f"pysher: no {what} within {WAIT}s")


def as_json(data):
    return json.loads(data) if isinstance(data, str) else data


# pysher 1.0.8's subscribe() sends pusher:subscribe and only then registers the channel
# object, so a reply that arrives in between is dropped (and with it the binding made on
# the returned channel). The channel is therefore made and bound first, and handed to
# pysher when subscribe() constructs it; pysher's own code runs unchanged.
prepared = {}


def channel_for(name, connection, auth=None):
    return prepared.pop(name, None) or Channel(name, connection, auth)


pysher.pusher.Channel = channel_for


def subscribe(pusher, name, auth=None, events=()):
    """Subscribes with waiters bound before the subscribe is sent: returns the channel,
    the subscription_succeeded waiter and a waiter per name in `events`."""
    channel = Channel(name, pusher.connection)
    ok = waiter(channel, "pusher_internal:subscription_succeeded")
    waiters = [waiter(channel, event) for event in events]
    prepared[name] = channel
    pusher.channels[name] = channel
    assert pusher.subscribe(name, auth=auth) is channel
    return (channel, ok, *waiters)


def connect(pusher):
    established = waiter(pusher.connection, "pusher:connection_established")
    pusher.connect()
    return as_json(get(established, "connection_established"))["socket_id"]


alice = client("alice")
out({"connected": connect(alice)})

# Public: the test triggers "headline" on "news" once it reads this line.
news, ok, headline = subscribe(alice, "news", events=["headline"])
get(ok, "subscription_succeeded on news")
out({"ready": "public"})
out({"public": as_json(get(headline, "headline"))})

# Private, signed by pysher with the secret; then a wrong signature is refused.
private, ok, notice = subscribe(alice, "private-py", events=["notice"])
get(ok, "subscription_succeeded on private-py")
out({"ready": "private"})
out({"private": as_json(get(notice, "notice"))})
forged, _, refused = subscribe(
    alice, "private-forged", auth=f"{key}:{'0' * 64}", events=["pusher:subscription_error"]
)
out({"forged": as_json(get(refused, "subscription_error"))["status"]})

# Presence: alice's member list, bob's arrival, bob's client event, bob's departure.
room, ok, added, removed, waved = subscribe(
    alice,
    "presence-room",
    events=["pusher_internal:member_added", "pusher_internal:member_removed", "client-wave"],
)
out({"here_alice": as_json(get(ok, "subscription_succeeded on presence-room"))["presence"]})
bob = client("bob")
connect(bob)
bob_room, bob_ok = subscribe(bob, "presence-room")
out({"here_bob": sorted(as_json(get(bob_ok, "bob's subscription_succeeded"))["presence"]["ids"])})
out({"member_added": as_json(get(added, "member_added"))})
bob_room.trigger("client-wave", {"from": "bob"})
out({"client_event": as_json(get(waved, "client-wave"))})
bob.unsubscribe("presence-room")
out({"member_removed": as_json(get(removed, "member_removed"))})

# pysher's disconnect() can block joining its connection thread; the process ends here
# and the server sees both sockets close.
sys.stdout.flush()
os._exit(0)
