//! The Pusher Channels protocol front end: Pusher apps, signatures, and (built on them)
//! the `/app/{key}` WebSocket endpoint and the `/apps/{id}/…` HTTP API, served on the
//! same hub, broker and Redis relay as the native protocol. docs/pusher.md describes it.
//!
//! - `config`: the `[pusher]` section (`[[pusher.apps]]`) and its validation.
//! - `apps`: the registry of apps by key and by id (`AppState::pusher`); secrets are an
//!   `AppSecret` whose `Debug` hides them.
//! - `identity`: socket ids (a `ClientId` as `\d+.\d+`) and the hub user of a signed-in
//!   Pusher user (`pusher~{app_id}~{user_id}`).
//! - `signature`: HMAC-SHA256 channel, user, API-request and webhook signatures, as the
//!   official SDKs make them; constant-time checks.
//! - `channel`: Pusher channel names and kinds, and each app's channel space in the hub.
//! - `api`: the Pusher HTTP API (`/apps/{id}/…`), signed requests only, cluster-wide.
//! - `quota`: per-app connection quotas, cluster-wide through the Redis heartbeats.
//! - `wire`: the Pusher frames, encoded once per publication through the hub's frame
//!   cache (`Dialect::Pusher` has its own slot beside JSON and MessagePack).
//!
//! How the two worlds meet: a Pusher publication is a `Publication` whose `event`
//! (`NamedEvent`) carries the event name and, on presence client events, the sender's
//! user id, and whose `exclude` is the socket left out; the memory broker, the Redis
//! envelope and history keep them, so cache channels replay the event and other nodes
//! deliver it.
//!
//! Architecture Invariant: an app's channels are reachable only through that app. They
//! live in the hub as `pusher~{app_id}~{name}` (see `channel`), a name no native client
//! or native API call can form, so native tokens and namespace permissions can never open
//! a channel that Pusher's signatures guard, and apps cannot see each other. Native code
//! pays nothing for this beyond one pointer per publication.

pub mod api;
pub mod apps;
pub mod channel;
pub mod close;
pub mod config;
pub mod identity;
mod presence;
pub mod quota;
pub mod session;
pub mod signature;
pub mod wire;

pub use apps::{AppSecret, PusherApp, PusherApps};
pub use config::{PusherAppConfig, PusherConfig, PusherWebhookConfig};
pub use wire::{encode_publication, ping_frame};

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::channel;
    use crate::broker::Broker;
    use crate::hub::{ClientHandle, Dialect, Hub, HubSettings, NamedEvent, QueueLimits};
    use crate::metrics::Metrics;
    use crate::protocol::{Encoding, Payload, StreamPosition};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn hub(tracker: &TaskTracker, stop: &CancellationToken) -> Hub {
        let settings = HubSettings {
            queue: QueueLimits {
                max_messages: 100,
                max_bytes: 1 << 20,
            },
            ping_interval_ms: 60_000,
            pong_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            expiry_grace_secs: 0,
            max_batch_bytes: 1 << 16,
            write_delay_ms: 0,
            max_messages_per_frame: 0,
            shards: 2,
        };
        Hub::start(settings, Arc::new(Metrics::new()), tracker, stop.clone())
    }

    /// The next frame queued for `client`, waiting for fan-out.
    async fn next_frame(client: &ClientHandle) -> Result<Bytes, Box<dyn std::error::Error>> {
        loop {
            if let Some(frame) = client.take_batch(1).items.pop() {
                return Ok(frame);
            }
            tokio::time::timeout(Duration::from_secs(5), client.wait_for_work()).await?;
        }
    }

    fn event(name: &str) -> NamedEvent {
        NamedEvent {
            name: Arc::from(name),
            user_id: None,
        }
    }

    #[tokio::test]
    async fn events_fan_out_as_pusher_frames_with_exclusion_and_history() -> TestResult {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let hub = hub(&tracker, &stop);
        let broker = Broker::memory(
            hub.clone(),
            crate::webhook::Webhooks::disabled(),
            &tracker,
            stop.clone(),
        );
        let pusher =
            |hub: &Hub| hub.register_as(Arc::from(""), Encoding::Json, None, Dialect::Pusher);
        let (a, b) = (pusher(&hub), pusher(&hub));
        let (channel, kind) = channel::to_hub("4242", "cache-news;1")?;
        let ns = channel::namespace_config(kind);
        for client in [&a, &b] {
            broker
                .subscribe(client, &channel, &ns, None, &|_| None)
                .await?;
        }
        let data = || Payload::Json(Bytes::from_static(br#""{\"n\":1}""#));
        broker
            .publish_event(&channel, data(), event("first"), Some(b.id), &ns)
            .await?;
        broker
            .publish_event(&channel, data(), event("second"), None, &ns)
            .await?;
        let expected = |name: &str| {
            format!(r#"{{"event":"{name}","channel":"cache-news;1","data":"{{\"n\":1}}"}}"#)
        };
        assert_eq!(next_frame(&a).await?, expected("first").as_bytes());
        assert_eq!(next_frame(&a).await?, expected("second").as_bytes());
        // `b` was excluded from the first: the second is the first it sees.
        assert_eq!(next_frame(&b).await?, expected("second").as_bytes());

        // History keeps the event, so a cache channel can replay the last one.
        let page = broker.history(&channel, &ns, None, None, false).await?;
        let last = page.messages.last().and_then(|m| m.event.clone());
        assert_eq!(last.map(|e| e.name.to_string()), Some("second".into()));
        let c = pusher(&hub);
        let from = StreamPosition {
            offset: page.offset - 1,
            epoch: page.epoch.clone(),
        };
        broker
            .subscribe(&c, &channel, &ns, Some(&from), &|_| None)
            .await?;
        assert_eq!(next_frame(&c).await?, expected("second").as_bytes());
        stop.cancel();
        Ok(())
    }

    #[tokio::test]
    async fn native_clients_get_native_frames_and_pusher_clients_none() -> TestResult {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let hub = hub(&tracker, &stop);
        let native = hub.register(Arc::from(""), Encoding::Json, None);
        let pusher = hub.register_as(Arc::from(""), Encoding::Json, None, Dialect::Pusher);
        let channel = crate::protocol::ChannelName::parse("news")?;
        hub.subscribe(&native, &channel, Vec::new().into());
        hub.subscribe(&pusher, &channel, Vec::new().into());
        let payload = Payload::Json(Bytes::from_static(b"{\"a\":1}"));
        let delivered = hub
            .dispatch(crate::hub::Publication::new(channel.clone(), payload, None))
            .await;
        assert_eq!(delivered, 2);
        let frame = next_frame(&native).await?;
        assert_eq!(
            &frame[..],
            br#"{"op":"message","channel":"news","data":{"a":1}}"#
        );
        // A native publication has no Pusher form: a second one, with an event, is the
        // first thing the Pusher client sees.
        let mut named = crate::hub::Publication::new(
            channel::to_hub("1", "news")?.0,
            Payload::Json(Bytes::from_static(b"\"x\"")),
            None,
        );
        named.event = Some(Arc::new(event("e")));
        hub.subscribe(&pusher, &named.channel, Vec::new().into());
        hub.dispatch(named).await;
        assert_eq!(
            &next_frame(&pusher).await?[..],
            br#"{"event":"e","channel":"news","data":"x"}"#
        );
        stop.cancel();
        Ok(())
    }
}
