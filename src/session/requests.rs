//! Handling of each client request once connected: every reply and `error` goes through
//! the client's own queue, so replies and messages reach the client in one order.

use std::time::Instant;

use super::rate::Verdict;
use super::{Flow, Session};
use crate::auth::{TokenError, may_publish, may_subscribe};
use crate::broker::PresenceQuery;
use crate::config::{NamespaceConfig, SubscribePolicy};
use crate::policy;
use crate::protocol::{
    ChannelName, CloseCode, ErrorCode, Payload, Request, RequestError, ServerMessage,
    StreamPosition, encode,
};
use crate::webhook::WebhookEvent;

/// A request that failed with a code and message for the `error` reply.
pub(crate) type Refusal = (ErrorCode, String);

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    (code, message.into())
}

impl From<policy::Refusal> for Refusal {
    fn from(refusal: policy::Refusal) -> Self {
        (refusal.code(), refusal.to_string())
    }
}

impl Session {
    /// Handles one decoded request (or the error it decoded to).
    pub(super) async fn handle(&mut self, request: Result<Request, RequestError>) -> Flow {
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                self.count("invalid", "error");
                // Requests that fail to decode cost a token too: garbage is no way around
                // the limit.
                match self.rate.check(Instant::now()) {
                    Verdict::Allow => {}
                    Verdict::Refuse => self.state.metrics.limit_tripped("rate_limit"),
                    Verdict::Disconnect => return self.rate_limited().await,
                }
                self.reply_error(err.id, err.code, &err.message);
                return Flow::Continue;
            }
        };
        if request == Request::Pong {
            self.client.pong_received();
            return Flow::Continue;
        }
        match self.rate.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.state.metrics.limit_tripped("rate_limit");
                self.reply_error(
                    request_id(&request),
                    ErrorCode::TooManyRequests,
                    "too many requests",
                );
                return Flow::Continue;
            }
            Verdict::Disconnect => return self.rate_limited().await,
        }
        if matches!(
            request,
            Request::Subscribe {
                recover: Some(_),
                ..
            }
        ) && self.drain().await == Flow::Stop
        {
            return Flow::Stop;
        }
        let op = request.op();
        let id = request_id(&request);
        let outcome = match request {
            Request::Connect { .. } => Err(refuse(ErrorCode::BadRequest, "already connected")),
            Request::Subscribe {
                channel,
                recover,
                token,
                ..
            } => {
                self.subscribe(id, &channel, recover.as_ref(), token.as_deref())
                    .await
            }
            Request::Unsubscribe { channel, .. } => self.unsubscribe(id, &channel),
            Request::Publish { channel, data, .. } => self.publish(id, &channel, data).await,
            Request::Presence {
                channel,
                limit,
                cursor,
                ..
            } => self.presence(id, &channel, limit, cursor).await,
            Request::PresenceStats { channel, .. } => self.presence_stats(id, &channel).await,
            Request::History {
                channel,
                since,
                limit,
                reverse,
                ..
            } => {
                self.history(id, &channel, since.as_ref(), limit, reverse)
                    .await
            }
            Request::Refresh { token, .. } => self.refresh(id, &token),
            Request::Pong => Ok(()),
        };
        match outcome {
            Ok(()) => self.count(op, "ok"),
            Err((code, message)) => {
                self.count(op, "error");
                self.reply_error(id, code, &message);
            }
        }
        Flow::Continue
    }

    /// Ends a connection that kept exceeding its inbound rate (4009). Not discarding:
    /// the client sees its replies and 110 errors, then `disconnect` and the close frame.
    pub(super) async fn rate_limited(&mut self) -> Flow {
        self.state.metrics.limit_tripped("rate_limit");
        self.client.close(
            CloseCode::RateLimited,
            CloseCode::RateLimited.default_reason(),
            false,
        );
        // Write everything up to the close, however many turns that takes: the close is
        // the end of this session, nothing else in the frame is handled.
        while self.flush().await == Flow::Continue {}
        Flow::Stop
    }

    fn count(&self, op: &str, result: &str) {
        self.state
            .metrics
            .client_requests
            .with_label_values(&[op, result])
            .inc();
    }

    fn send(&self, message: &ServerMessage<'_>) -> Result<(), Refusal> {
        let bytes = encode(self.transport.encoding(), message)
            .map_err(|e| refuse(ErrorCode::Internal, format!("reply cannot be encoded: {e}")))?;
        self.enqueue(bytes);
        Ok(())
    }

    /// Parses a channel name and finds its namespace (errors 107 and 102).
    fn channel(&self, name: &str) -> Result<(ChannelName, NamespaceConfig), Refusal> {
        Ok(policy::resolve_channel(&self.state.config(), name)?)
    }

    /// Whether this client may read `channel` (history, presence): subscribed already, or
    /// allowed to subscribe without a token.
    fn may_read(&self, channel: &ChannelName, ns: &NamespaceConfig) -> bool {
        self.client.is_subscribed(channel) || may_subscribe(ns, channel, &self.client.user)
    }

    async fn subscribe(
        &mut self,
        id: u64,
        name: &str,
        recover: Option<&StreamPosition>,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        let (channel, ns) = self.channel(name)?;
        self.check_subscribe_permission(&channel, &ns, token)?;
        if self.client.is_subscribed(&channel) {
            return Err(refuse(
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {channel}"),
            ));
        }
        if self.client.channel_count() >= self.state.config().client.max_channels {
            self.state.metrics.limit_tripped("channels_per_connection");
            return Err(refuse(
                ErrorCode::LimitExceeded,
                "too many channels on this connection",
            ));
        }
        let proxy_url = ns
            .subscribe_proxy(&self.state.config().proxy)
            .map(str::to_owned);
        super::proxied::check_subscribe(&self.state, proxy_url.as_deref(), &self.client, name)
            .await?;
        let encoding = self.transport.encoding();
        let reply = |result: &crate::broker::SubscribeResult| {
            let message = ServerMessage::Subscribed {
                id,
                channel: channel.as_str(),
                epoch: result.position.as_ref().map(|p| p.epoch.as_str()),
                offset: result.position.as_ref().map(|p| p.offset),
                recovered: result.recovered,
            };
            encode(encoding, &message).ok()
        };
        let recover = recover.filter(|_| ns.history_size > 0);
        match self
            .state
            .broker
            .subscribe(&self.client, &channel, &ns, recover, &reply)
            .await
        {
            Ok(Some(_)) => {
                crate::telemetry::session_event(self.client.id, "subscribe", channel.as_str());
                Ok(())
            }
            Ok(None) => Err(refuse(
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {channel}"),
            )),
            Err(err) => Err(refuse(ErrorCode::Internal, err.to_string())),
        }
    }

    fn check_subscribe_permission(
        &self,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        token: Option<&str>,
    ) -> Result<(), Refusal> {
        let user = &*self.client.user;
        if !channel.admits_user(user) {
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!("{channel} is a user channel of other users"),
            ));
        }
        if ns.allow_subscribe != SubscribePolicy::Token || token.is_none() {
            return if may_subscribe(ns, channel, user) {
                Ok(())
            } else {
                Err(refuse(
                    ErrorCode::PermissionDenied,
                    format!("not allowed to subscribe to {channel}"),
                ))
            };
        }
        let token = token.unwrap_or_default();
        match self.state.tokens.verify_subscribe(token) {
            Ok(claims) if claims.sub == user && claims.channel == channel.as_str() => Ok(()),
            Ok(_) => Err(refuse(
                ErrorCode::PermissionDenied,
                "subscription token is for another user or channel",
            )),
            Err(TokenError::Expired) => Err(refuse(
                ErrorCode::TokenExpired,
                "subscription token expired",
            )),
            Err(err) => Err(refuse(ErrorCode::Unauthorized, err.to_string())),
        }
    }

    fn unsubscribe(&mut self, id: u64, name: &str) -> Result<(), Refusal> {
        let channel =
            ChannelName::parse(name).map_err(|e| refuse(ErrorCode::BadRequest, e.to_string()))?;
        self.state.hub.unsubscribe(&self.client, &channel);
        self.send(&ServerMessage::Unsubscribed {
            id,
            channel: channel.as_str(),
        })
    }

    async fn publish(&mut self, id: u64, name: &str, data: Payload) -> Result<(), Refusal> {
        let (channel, ns) = self.channel(name)?;
        if !may_publish(&ns, &self.client.user) || !channel.admits_user(&self.client.user) {
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!("publishing to {channel} is not allowed"),
            ));
        }
        let proxy_url = ns
            .publish_proxy(&self.state.config().proxy)
            .map(str::to_owned);
        let data = super::proxied::check_publish(
            &self.state,
            proxy_url.as_deref(),
            &self.client,
            name,
            data,
        )
        .await?;
        let limit = self.state.config().api.max_publish_bytes;
        if let Err(refusal) = policy::check_publishable(&data, limit) {
            if matches!(refusal, policy::Refusal::DataTooLarge { .. }) {
                self.state.metrics.limit_tripped("message_size");
            }
            return Err(refusal.into());
        }
        let webhooks = &self.state.webhooks;
        let (target, name) = webhooks.target_of(&channel);
        let event = webhooks
            .wants(&target, "publish")
            .then(|| WebhookEvent::publish(&name, &self.client.info_for_presence(), &data));
        let result = self
            .state
            .broker
            .publish(&channel, data, &ns, None, None)
            .await
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        self.state.metrics.published_client.inc();
        if let Some(event) = event {
            webhooks.emit(&target, event);
        }
        self.send(&ServerMessage::Published {
            id,
            offset: result.offset,
            epoch: result.epoch.as_deref(),
        })
    }

    /// Checks a `presence` or `presence_stats` request (102, 107, 108, 103).
    fn presence_channel(&self, name: &str) -> Result<(ChannelName, NamespaceConfig), Refusal> {
        let (channel, ns) = self.channel(name)?;
        if !ns.presence {
            return Err(refuse(
                ErrorCode::NotAvailable,
                format!("presence is off for {channel}"),
            ));
        }
        if !self.may_read(&channel, &ns) {
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!("not allowed to see presence of {channel}"),
            ));
        }
        Ok((channel, ns))
    }

    /// A page of presence. A reply that could not fit the client's queue is refused
    /// (106), never queued: it would evict the client that asked.
    async fn presence(
        &mut self,
        id: u64,
        name: &str,
        limit: Option<u64>,
        cursor: Option<String>,
    ) -> Result<(), Refusal> {
        let (channel, ns) = self.presence_channel(name)?;
        let query = PresenceQuery::capped(limit, cursor, ns.presence_max_page);
        let page = self
            .state
            .broker
            .presence(&channel, &query)
            .await
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let reply = encode(
            self.transport.encoding(),
            &ServerMessage::Presence {
                id,
                channel: channel.as_str(),
                clients: &page.clients,
                cursor: page.cursor.as_deref(),
            },
        )
        .map_err(|e| refuse(ErrorCode::Internal, format!("reply cannot be encoded: {e}")))?;
        let bound = self.state.config().client.queue_max_bytes;
        if reply.len() > bound {
            self.state.metrics.limit_tripped("presence_reply_size");
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "presence reply of {} entries ({} bytes) exceeds client.queue_max_bytes ({bound}); ask with a smaller limit, or use presence_stats",
                    page.clients.len(),
                    reply.len()
                ),
            ));
        }
        self.enqueue(reply);
        Ok(())
    }

    async fn presence_stats(&mut self, id: u64, name: &str) -> Result<(), Refusal> {
        let (channel, _) = self.presence_channel(name)?;
        let stats = self
            .state
            .broker
            .presence_stats(&channel)
            .await
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        self.send(&ServerMessage::PresenceStats {
            id,
            channel: channel.as_str(),
            clients: stats.clients,
            users: stats.users,
        })
    }

    async fn history(
        &mut self,
        id: u64,
        name: &str,
        since: Option<&StreamPosition>,
        limit: Option<u64>,
        reverse: bool,
    ) -> Result<(), Refusal> {
        let (channel, ns) = self.channel(name)?;
        if ns.history_size == 0 {
            return Err(refuse(
                ErrorCode::NotAvailable,
                format!("history is off for {channel}"),
            ));
        }
        if !self.may_read(&channel, &ns) {
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!("not allowed to read history of {channel}"),
            ));
        }
        let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let page = self
            .state
            .broker
            .history(&channel, &ns, since, limit, reverse)
            .await
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let messages = page.items(self.transport.encoding());
        self.send(&ServerMessage::History {
            id,
            channel: channel.as_str(),
            epoch: &page.epoch,
            offset: page.offset,
            messages,
        })
    }

    fn refresh(&mut self, id: u64, token: &str) -> Result<(), Refusal> {
        match self.state.tokens.verify_connect(token) {
            Ok(claims) if claims.sub == *self.client.user => {
                self.client.set_expires_at(claims.exp);
                self.send(&ServerMessage::Refreshed {
                    id,
                    expires_at: claims.exp,
                })
            }
            Ok(_) => Err(refuse(ErrorCode::Unauthorized, "token is for another user")),
            Err(TokenError::Expired) => Err(refuse(ErrorCode::TokenExpired, "token expired")),
            Err(err) => Err(refuse(ErrorCode::Unauthorized, err.to_string())),
        }
    }
}

fn request_id(request: &Request) -> u64 {
    match request {
        Request::Connect { id, .. }
        | Request::Subscribe { id, .. }
        | Request::Unsubscribe { id, .. }
        | Request::Publish { id, .. }
        | Request::Presence { id, .. }
        | Request::PresenceStats { id, .. }
        | Request::History { id, .. }
        | Request::Refresh { id, .. } => *id,
        Request::Pong => 0,
    }
}
