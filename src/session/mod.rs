//! One WebSocket connection: the upgrade (subprotocol, origin), the `connect` handshake,
//! then one task that both reads requests and drains the client's queue into batched
//! frames, until the client leaves or the hub asks it to close.
//!
//! Architecture Invariant: a session is a single task and owns no timer while idle; pings,
//! pong and write timeouts come from the hub's shared ticker through the client handle.
//! The session is the only place that maps an ending to a WebSocket close code.

mod connect;
mod proxied;
pub(crate) mod rate;
mod requests;
mod stream;
mod transport;
mod upgrade;

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::Instrument;

pub(crate) use connect::{Refused, apply_expiry, identify};
pub(crate) use proxied::check_subscribe;
pub use proxied::run_refresher;
pub(crate) use upgrade::upgrade_raw;
pub(crate) use upgrade::{bearer_token, origin_allowed};
pub use upgrade::{origins_open, pusher_ws_handler, ws_handler};

use crate::hub::ClientHandle;
use crate::limits::LimitSlot;
use crate::protocol::{CloseCode, Encoding, decode_frame, encode_error};
use crate::state::AppState;
use rate::RateLimiter;
pub(crate) use stream::Replayed;
use stream::SocketStream;
use transport::{Inbound, Transport};

/// Batches written before the session goes back to reading.
const BATCHES_PER_TURN: usize = 16;

thread_local! {
    /// The frame list of a write turn, kept between turns while it is small: one per
    /// thread, not one per connection, so an idle connection holds none.
    static SPARE_ITEMS: std::cell::Cell<Vec<bytes::Bytes>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What woke the serve loop.
enum Event {
    Work,
    Inbound(Inbound),
}

/// Whether the session goes on after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The socket of an upgraded connection, taken out of hyper's wrapper so the client's
/// outbox can write to it directly. `None` (the connection is dropped) if it is not the
/// TCP stream the server's accept loop serves (always behind `Replayed`).
pub(super) fn socket_stream(upgraded: hyper::upgrade::Upgraded) -> Option<SocketStream> {
    use hyper_util::rt::TokioIo;
    match upgraded.downcast::<TokioIo<Replayed>>() {
        Ok(parts) => {
            // hyper's unread bytes came before the replayed bytes it had not read yet.
            let (stream, unread) = parts.io.into_inner().into_parts();
            let prefix = if unread.is_empty() {
                parts.read_buf
            } else {
                let mut prefix = bytes::BytesMut::from(parts.read_buf);
                prefix.extend_from_slice(&unread);
                prefix.freeze()
            };
            Some(SocketStream::new(Arc::new(stream), prefix))
        }
        Err(_) => {
            tracing::warn!("upgraded connection is not a TCP stream; dropped");
            None
        }
    }
}

/// A connected session.
struct Session {
    transport: Transport,
    state: Arc<AppState>,
    client: Arc<ClientHandle>,
    rate: RateLimiter,
    /// Set on a Pusher connection (`crate::pusher`): the same session, another front end.
    pusher: Option<Box<crate::pusher::session::PusherConn>>,
    /// Which side `poll_event` polls first next time (see `poll_event`).
    read_first: bool,
    /// Held for the session's life; dropping it releases the connection's limit slots.
    slots: Held,
}

/// The limit slots one connection holds (see `crate::limits`); dropped with the session.
pub(super) struct Admission {
    /// Held from the upgrade until `connect` succeeds.
    pending: Option<LimitSlot>,
    /// `None` when the address is unknown or over its limit. Held, never read.
    _ip: Option<LimitSlot>,
    /// The client's address is over `max_connections_per_ip`: close 4010 at once.
    over_ip_limit: bool,
    /// The client's address (behind trusted proxies, the one they report), for the log.
    client_ip: Option<IpAddr>,
    user: Option<LimitSlot>,
    /// The upgrade's headers for the connect proxy, when it is on.
    forwarded: Option<crate::proxy::Forwarded>,
}

impl Admission {
    fn new(state: &AppState, pending: LimitSlot, peer: Option<IpAddr>, max_per_ip: usize) -> Self {
        let ip = peer.and_then(|ip| state.limits.try_ip(ip, max_per_ip));
        let over_ip_limit = peer.is_some() && ip.is_none();
        if over_ip_limit {
            state.metrics.limit_tripped("connections_per_ip");
        }
        Admission {
            pending: Some(pending),
            _ip: ip,
            over_ip_limit,
            client_ip: peer,
            user: None,
            forwarded: None,
        }
    }

    /// The client completed `connect`: it is no longer pending.
    fn connected(&mut self, user: Option<LimitSlot>) {
        self.pending = None;
        self.user = user;
    }

    /// What a connected session keeps of its admission for its life.
    fn held(self) -> Held {
        Held {
            _ip: self._ip,
            _user: self.user,
            client_ip: self.client_ip,
        }
    }
}

/// The limit slots a connected session holds (dropped with it), and its client's
/// address for its log span: the part of `Admission` that outlives `connect`.
struct Held {
    _ip: Option<LimitSlot>,
    _user: Option<LimitSlot>,
    client_ip: Option<IpAddr>,
}

/// A connection that completed `connect`, ready to be served.
///
/// The session sits in its own allocation so the connection's task future holds only a
/// pointer to it and the state of the await it is parked at (see
/// [`Session::serve_and_finish`]).
pub(super) struct Connected {
    session: Box<Session>,
    rest: Vec<Result<crate::protocol::Request, crate::protocol::RequestError>>,
}

/// Runs the `connect` handshake of an upgraded connection. `None` when it ended there
/// (closed with its code). Callers box this future: it is short-lived, and inlined it
/// would enlarge every session's task for the connection's whole life.
pub(super) async fn connect(
    socket: tokio_tungstenite::WebSocketStream<SocketStream>,
    state: Arc<AppState>,
    encoding: Encoding,
    header_token: Option<String>,
    mut admission: Admission,
) -> Option<Connected> {
    let config = state.config();
    let mut transport = Transport::new(socket, encoding, config.client.write_timeout());
    let handshake = if admission.over_ip_limit {
        Err(CloseCode::ConnectionLimit.into())
    } else {
        connect::handshake(&mut transport, &state, header_token, &mut admission).await
    };
    let (client, rest) = match handshake {
        Ok(connected) => connected,
        Err(connect::Refused { code, reason }) => {
            let reason = reason.as_deref().unwrap_or(code.default_reason());
            refuse(&mut transport, &state, code, reason, code.reconnect()).await;
            return None;
        }
    };
    transport.attach(&client, state.hub.write_delay().is_zero());
    let session = Box::new(Session {
        transport,
        rate: RateLimiter::new(&config.client),
        pusher: None,
        read_first: false,
        state,
        client,
        slots: admission.held(),
    });
    Some(Connected { session, rest })
}

/// Starts a Pusher connection to the app with `key` (`GET /app/{key}`): refusals close
/// with Pusher's codes (4001 unknown app, 4003 disabled, 4007 protocol, 4004 over the
/// app's quota, 4100 over a node or IP limit); otherwise the client is registered and
/// `pusher:connection_established` queued. `None` when it ended there.
pub(super) async fn connect_pusher(
    socket: tokio_tungstenite::WebSocketStream<SocketStream>,
    state: Arc<AppState>,
    key: String,
    protocol_ok: bool,
    mut admission: Admission,
) -> Option<Connected> {
    use crate::pusher::close;
    let config = state.config();
    let mut transport = Transport::pusher(socket, config.client.write_timeout());
    let app = state.pusher.by_key(&key).cloned();
    let admitted = match &app {
        _ if admission.over_ip_limit => Err((close::OVER_CAPACITY, "over the connection limit")),
        None => Err((close::APP_NOT_FOUND, "App key not in this cluster")),
        Some(app) if !app.enabled => Err((close::APP_DISABLED, "App is disabled")),
        Some(_) if !protocol_ok => {
            Err((close::UNSUPPORTED_PROTOCOL, "Unsupported protocol version"))
        }
        Some(_) if state.hub.connection_count() >= config.server.max_connections => {
            state.metrics.limit_tripped("connections_per_node");
            Err((close::OVER_CAPACITY, "over capacity"))
        }
        Some(app) => match crate::pusher::quota::admit(&state, app) {
            Some(slot) => Ok((app.clone(), slot)),
            None => {
                state.metrics.limit_tripped("pusher_app_connections");
                Err((close::OVER_QUOTA, "Over connection quota"))
            }
        },
    };
    let (app, slot) = match admitted {
        Ok(admitted) => admitted,
        Err((code, reason)) => {
            refuse(
                &mut transport,
                &state,
                CloseCode::Custom(code),
                reason,
                false,
            )
            .await;
            return None;
        }
    };
    admission.connected(Some(slot));
    let client = state.hub.register_as(
        Arc::from(""),
        Encoding::Json,
        None,
        crate::hub::Dialect::Pusher,
    );
    transport.attach(&client, state.hub.write_delay().is_zero());
    let conn = crate::pusher::session::PusherConn::new(app, &client, &state.metrics);
    let _ = client.push_replay(
        vec![conn.established(config.client.ping_interval_secs)],
        state.hub.queue_limits(),
    );
    let session = Box::new(Session {
        transport,
        rate: RateLimiter::new(&config.client),
        pusher: Some(Box::new(conn)),
        read_first: false,
        state,
        client,
        slots: admission.held(),
    });
    Some(Connected {
        session,
        rest: Vec::new(),
    })
}

/// Ends a connection refused before it was served: closes with `code` (a `Normal` ending
/// needs no close of ours) and counts the disconnect under it.
async fn refuse(
    transport: &mut Transport,
    state: &AppState,
    code: CloseCode,
    reason: &str,
    reconnect: bool,
) {
    if code != CloseCode::Normal {
        transport.close(code, reason, reconnect).await;
    }
    state
        .metrics
        .disconnects
        .with_label_values(&[code.label()])
        .inc();
}

impl Connected {
    /// Serves the connection to its end. Not an `async fn`: one would keep `self` and
    /// its parts beside the session's future for the connection's whole life.
    pub(super) fn run_to_end(self) -> impl std::future::Future<Output = ()> + Send {
        self.session.serve_and_finish(self.rest)
    }
}

impl Session {
    /// Handles the rest of the `connect` frame, serves, and cleans up.
    ///
    /// This future is the connection's task for its whole life, so it holds the boxed
    /// session and, while idle, nothing but a poll of the queue and the socket (see
    /// `poll_event`): every handler is boxed, one small allocation per wake-up for a
    /// task of a few hundred bytes less on every connection.
    ///
    /// Not biased: under sustained writes the queue is ready again after every turn,
    /// and a loop that always polled it first would never read the client's requests
    /// and pongs. `poll_event` alternates which side it polls first.
    async fn serve_and_finish(
        mut self: Box<Self>,
        rest: Vec<Result<crate::protocol::Request, crate::protocol::RequestError>>,
    ) {
        tracing::debug!(
            client_id = %self.client.id,
            user = %self.client.user,
            ip = self.slots.client_ip.map(tracing::field::display),
            encoding = self.transport.encoding().label(),
            "connected"
        );
        let mut flow = Flow::Continue;
        if !rest.is_empty() {
            let span = self.span();
            flow = Box::pin(self.handle_all(rest)).instrument(span).await;
        }
        while flow == Flow::Continue {
            let event = std::future::poll_fn(|cx| self.poll_event(cx)).await;
            flow = match event {
                Event::Work => Box::pin(self.flush()).await,
                Event::Inbound(inbound) => Box::pin(self.on_inbound(inbound)).await,
            };
        }
        let span = self.span();
        Box::pin(self.finish()).instrument(span).await;
    }

    /// The log span of what the session does for its client: handling a frame, and its
    /// end. Not held between frames: a span for the connection's life would cost every
    /// idle connection its memory, and every wake-up an enter and exit. At `debug` only:
    /// at the default level the log layer would format its fields for every frame (about
    /// 5,000 instructions, an eighth of a connection's set-up), for the rare warning
    /// inside; those name the client themselves.
    fn span(&self) -> tracing::Span {
        match &self.pusher {
            None => tracing::debug_span!(
                "session",
                client_id = %self.client.id,
                user = %self.client.user,
                ip = self.slots.client_ip.map(tracing::field::display),
            ),
            Some(conn) => tracing::debug_span!(
                "pusher_session",
                client_id = %self.client.id,
                app = %conn.app().id,
                ip = self.slots.client_ip.map(tracing::field::display),
            ),
        }
    }

    /// Handles requests in order until one stops the session.
    async fn handle_all(
        &mut self,
        requests: Vec<Result<crate::protocol::Request, crate::protocol::RequestError>>,
    ) -> Flow {
        for request in requests {
            if self.handle(request).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// What the idle session waits for: work in the client's queue, or something from
    /// the socket. A poll, not a `select!` of two futures, so an idle connection's task
    /// holds no wait state at all. Each poll starts with the other side, so neither can
    /// starve the other.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.read_first = !self.read_first;
        if self.read_first
            && let Poll::Ready(inbound) = self.transport.poll_next(cx)
        {
            return Poll::Ready(Event::Inbound(inbound));
        }
        if self.client.poll_work(cx).is_ready() {
            return Poll::Ready(Event::Work);
        }
        if !self.read_first {
            return self.transport.poll_next(cx).map(Event::Inbound);
        }
        Poll::Pending
    }

    async fn on_inbound(&mut self, inbound: Inbound) -> Flow {
        match inbound {
            Inbound::Frame(frame) => {
                let span = self.span();
                self.on_frame(&frame).instrument(span).await
            }
            Inbound::Closed => {
                self.client.close(CloseCode::Normal, "client closed", true);
                Flow::Stop
            }
            Inbound::TooLarge => {
                self.state.metrics.limit_tripped("frame_size");
                self.client.close(
                    CloseCode::FrameTooLarge,
                    CloseCode::FrameTooLarge.default_reason(),
                    true,
                );
                Box::pin(self.flush()).await
            }
            Inbound::Broken => {
                self.client
                    .close(CloseCode::GoingAway, "connection lost", true);
                Flow::Stop
            }
        }
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Flow {
        if let Some(conn) = self.pusher.as_deref_mut() {
            match self.rate.check(std::time::Instant::now()) {
                rate::Verdict::Allow => {}
                rate::Verdict::Refuse => {
                    self.state.metrics.limit_tripped("rate_limit");
                    return Flow::Continue;
                }
                rate::Verdict::Disconnect => return self.rate_limited().await,
            }
            let next =
                crate::pusher::session::on_frame(&self.state, &self.client, conn, frame).await;
            if next == crate::pusher::session::Next::Close {
                return Box::pin(self.flush()).await;
            }
            return Flow::Continue;
        }
        let requests = match decode_frame(self.transport.encoding(), frame) {
            Ok(requests) => requests,
            Err(err) => {
                tracing::debug!(error = %err, "malformed frame");
                self.client
                    .close(CloseCode::Malformed, &err.to_string(), true);
                return Box::pin(self.flush()).await;
            }
        };
        // Request handling (down to broker round trips) is a large future; it is inline
        // here because the serve loop boxes this whole handler.
        self.handle_all(requests).await
    }

    /// Writes what the outbox holds (what a direct write left unsent, control frames,
    /// queued messages as batch frames); performs the close once the queue says so.
    async fn flush(&mut self) -> Flow {
        let delay = self.state.hub.write_delay();
        if !delay.is_zero() {
            // Let more messages join this frame (`client.write_delay_ms`).
            tokio::time::sleep(delay).await;
        }
        let max_batch = self.state.hub.max_batch_bytes();
        let mut turn = crate::hub::WriteTurn {
            items: SPARE_ITEMS.take(),
            ..Default::default()
        };
        let flow = self.write_turns(&mut turn, max_batch).await;
        // Keep a small frame list for the next wake-up on this thread.
        if turn.items.capacity() <= 16 {
            turn.items.clear();
            SPARE_ITEMS.set(turn.items);
        }
        flow
    }

    async fn write_turns(&mut self, turn: &mut crate::hub::WriteTurn, max_batch: usize) -> Flow {
        for _ in 0..BATCHES_PER_TURN {
            let max_messages = self.state.hub.max_messages_per_frame();
            self.client.take_write(max_batch, max_messages, turn);
            self.transport.count_direct(turn, &self.state.metrics);
            if !turn.is_empty()
                && !self
                    .transport
                    .send_turn(turn, &self.client, &self.state.hub, &self.state.metrics)
                    .await
            {
                self.client.end_write();
                self.client
                    .close(CloseCode::GoingAway, "write failed", true);
                return Flow::Stop;
            }
            if let Some(closing) = turn.closing.take() {
                self.client.end_write();
                if closing.code != CloseCode::Normal {
                    Box::pin(self.transport.close(
                        closing.code,
                        &closing.reason,
                        closing.reconnect,
                    ))
                    .await;
                }
                return Flow::Stop;
            }
            if turn.is_empty() {
                self.transport.report_if_stale(&self.state.metrics);
                return Flow::Continue;
            }
        }
        // More is waiting: read in between, then come back.
        self.client.end_write();
        self.client.rewake();
        Flow::Continue
    }

    /// Writes what is queued now (more may come meanwhile) before going on: a request
    /// that queues a lot (a recovery) then finds the queue empty if the client reads,
    /// and a client that does not read is stopped here by the write timeout instead of
    /// piling up replies.
    async fn drain(&mut self) -> Flow {
        // A turn takes at least half its batch bytes unless the queue runs empty (a batch
        // is filled up to `max_batch_bytes` or takes one bigger message); stop after the
        // turns what was queued needs, even if live traffic keeps coming.
        let per_turn = (self.state.hub.max_batch_bytes() / 2).max(1) * BATCHES_PER_TURN;
        let turns = self.client.queued_bytes().div_ceil(per_turn);
        for _ in 0..turns {
            if self.client.queue_len() == 0 {
                break;
            }
            if Box::pin(self.flush()).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Queues an `error` reply.
    fn reply_error(&self, id: u64, code: crate::protocol::ErrorCode, message: &str) {
        let bytes = encode_error(self.transport.encoding(), id, code, message);
        self.enqueue(bytes);
    }

    fn enqueue(&self, bytes: bytes::Bytes) {
        let _ = self.state.hub.enqueue(&self.client, bytes);
    }

    /// Unregisters the client and records why the connection ended.
    async fn finish(&mut self) {
        let label = self.state.hub.unregister_ended(&self.client);
        tracing::debug!(code = label, "disconnected");
        crate::telemetry::session_ended(self.client.id, label);
        self.transport.shutdown().await;
        let (frames, bytes) = self.client.take_direct_counts();
        self.transport.count_frames(frames, bytes);
        self.transport.flush_metrics(&self.state.metrics);
    }
}
