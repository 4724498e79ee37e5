//! The session's side of the backend proxy (`crate::proxy`): turning a connect proxy's
//! verdict into an identity or a close, a subscribe or publish proxy's verdict into a
//! go-ahead or an error reply, and renewing expired proxy-granted connections.
//!
//! A backend that did not answer (timeout, HTTP error, breaker open, too many calls in
//! flight) is always a temporary refusal: close 4012 on connect, error 108 (`not
//! available`) on requests, which clients retry with backoff.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::connect::{Identity, Refused};
use crate::hub::ClientHandle;
use crate::protocol::{CloseCode, Encoding, ErrorCode, Payload};
use crate::proxy::{BackendProxy, Forwarded, Transport, Verdict};
use crate::state::AppState;

/// What a `connect` without a token asks the backend.
pub(super) struct ConnectAsk<'a> {
    pub(super) proxy: &'a BackendProxy,
    pub(super) forwarded: Forwarded,
    pub(super) transport: Transport,
    pub(super) encoding: Encoding,
    pub(super) client: Option<&'a str>,
    pub(super) data: Option<&'a Payload>,
}

/// Asks the connect proxy who the client is.
pub(super) async fn connect(ask: ConnectAsk<'_>) -> Result<Identity, Refused> {
    let data = ask.data.and_then(json_of);
    let verdict = ask
        .proxy
        .connect(
            &ask.forwarded,
            ask.transport,
            ask.encoding,
            ask.client,
            data.as_deref(),
        )
        .await;
    match verdict {
        Ok(Verdict::Granted(grant)) => Ok(Identity {
            user: grant.user,
            expires_at: grant.expire_at,
            info: grant.info,
            channels: grant.channels,
            by_proxy: true,
        }),
        Ok(Verdict::Refused(refusal)) => Err(Refused {
            code: refusal
                .code
                .and_then(CloseCode::from_u16)
                .filter(|c| (4000..=4999).contains(&c.as_u16()))
                .unwrap_or(CloseCode::InvalidToken),
            reason: refusal.message,
        }),
        Err(_) => Err(CloseCode::BackendUnavailable.into()),
    }
}

use super::requests::Refusal as RequestRefusal;

/// Asks the namespace's subscribe proxy, if it has one.
pub(crate) async fn check_subscribe(
    state: &AppState,
    url: Option<&str>,
    client: &ClientHandle,
    channel: &str,
) -> Result<(), RequestRefusal> {
    let Some(url) = url else {
        return Ok(());
    };
    let proxy = active_proxy(state)?;
    let verdict = proxy
        .subscribe(url, &client.client_id(), &client.user, channel)
        .await;
    match verdict {
        Ok(Verdict::Granted(())) => Ok(()),
        Ok(Verdict::Refused(refusal)) => Err(refused(refusal)),
        Err(err) => Err(unavailable(&err)),
    }
}

/// Asks the namespace's publish proxy, if it has one; returns the data to publish.
pub(super) async fn check_publish(
    state: &AppState,
    url: Option<&str>,
    client: &ClientHandle,
    channel: &str,
    data: Payload,
) -> Result<Payload, RequestRefusal> {
    let Some(url) = url else {
        return Ok(data);
    };
    let proxy = active_proxy(state)?;
    let Some(json) = json_of(&data) else {
        return Err((ErrorCode::BadRequest, "data cannot be sent as JSON".into()));
    };
    let verdict = proxy
        .publish(url, &client.client_id(), &client.user, channel, &json)
        .await;
    match verdict {
        Ok(Verdict::Granted(None)) => Ok(data),
        Ok(Verdict::Granted(Some(rewritten))) => Ok(Payload::from_raw_json(&rewritten)),
        Ok(Verdict::Refused(refusal)) => Err(refused(refusal)),
        Err(err) => Err(unavailable(&err)),
    }
}

fn refused(refusal: crate::proxy::Refusal) -> RequestRefusal {
    (
        ErrorCode::PermissionDenied,
        refusal
            .message
            .unwrap_or_else(|| "refused by the backend".into()),
    )
}

/// The node's backend proxy. A namespace that names a proxy URL on a node started without
/// one (it came with a configuration reload; proxy settings need a restart) is refused,
/// never let through unchecked.
fn active_proxy(state: &AppState) -> Result<&BackendProxy, RequestRefusal> {
    state.proxy.as_deref().ok_or_else(|| {
        (
            ErrorCode::NotAvailable,
            "this namespace's backend proxy is not active on this node until a restart".into(),
        )
    })
}

fn unavailable(err: &crate::proxy::ProxyError) -> RequestRefusal {
    (ErrorCode::NotAvailable, format!("{err}; retry later"))
}

/// A payload as one JSON value (MessagePack data is transcoded).
fn json_of(payload: &Payload) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(payload).ok()
}

/// Renews connections the connect proxy granted once they expire (the hub's ticker
/// hands them over instead of closing them with 4002), until `stop`.
pub async fn run_refresher(
    state: Arc<AppState>,
    mut expired: tokio::sync::mpsc::Receiver<Arc<ClientHandle>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(proxy) = state.proxy.clone() else {
        return;
    };
    let calls = tokio_util::task::TaskTracker::new();
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => break,
            client = expired.recv() => match client {
                Some(client) => client,
                None => break,
            },
        };
        calls.spawn(refresh_one(proxy.clone(), client));
    }
    calls.close();
    calls.wait().await;
}

/// Seconds before a renewal that the backend could not answer is tried again.
const RETRY_REFRESH_SECS: u64 = 10;

async fn refresh_one(proxy: Arc<BackendProxy>, client: Arc<ClientHandle>) {
    match proxy.refresh(&client.client_id(), &client.user).await {
        Ok(Verdict::Granted(grant)) => match grant.expire_at {
            // Already past: no renewal. Ending it now beats asking again every tick.
            Some(exp) if exp <= crate::auth::unix_now() => {
                client.close(
                    CloseCode::TokenExpired,
                    "the refresh proxy renewed the connection with an expire_at already past",
                    true,
                );
            }
            Some(exp) => client.set_expires_at(exp),
            None => client.set_expires_at(0),
        },
        Ok(Verdict::Refused(refusal)) => {
            let reason = refusal
                .message
                .unwrap_or_else(|| CloseCode::TokenExpired.default_reason().into());
            client.close(CloseCode::TokenExpired, &reason, true);
        }
        Err(_) => client.set_expires_at(crate::auth::unix_now() + RETRY_REFRESH_SECS),
    }
}
