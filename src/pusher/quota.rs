//! Per-app connection quotas (`max_connections`, close 4004 beyond it), cluster-wide.
//!
//! Each node counts its own connections of an app in `ConnectionLimits` under the user
//! key `pusher~{app_id}`. With the Redis broker every node's heartbeat carries those counters (`RedisBroker::share_counts`),
//! so a node admits a connection while its own count plus the others' last reported
//! counts stays below the quota. The others' counts are as fresh as their last heartbeat
//! (`redis.heartbeat_interval_ms`; a new node announces itself at once), and a crashed
//! node's count stops counting after `redis.node_timeout_ms`: connections arriving at
//! several nodes within one heartbeat interval can exceed the quota by what those nodes
//! admit in that interval, never by more. Checking Redis on every connect would make
//! every connect wait for Redis and fail when it is down; this keeps admission local.

use std::sync::Arc;

use super::PusherApp;
use crate::broker::Broker;
use crate::limits::LimitSlot;
use crate::state::AppState;

/// The prefix of the app counters in `ConnectionLimits`, shared with the cluster.
pub const KEY_PREFIX: &str = "pusher~";

/// The counter of `app_id`'s connections.
pub fn key(app_id: &str) -> Arc<str> {
    Arc::from(format!("{KEY_PREFIX}{app_id}"))
}

/// Starts sharing this node's app counters with the cluster (Redis broker only).
pub fn share(state: &AppState) {
    if let Broker::Redis(broker) = &state.broker {
        broker.share_counts(state.limits.clone(), KEY_PREFIX);
    }
}

/// A place among `app`'s connections, or `None` over its quota.
pub fn admit(state: &AppState, app: &PusherApp) -> Option<LimitSlot> {
    let key = key(&app.id);
    if app.max_connections == 0 {
        return state.limits.try_user(&key, 0);
    }
    let elsewhere = match &state.broker {
        Broker::Redis(broker) => broker.others_count(&key),
        Broker::Memory(_) => 0,
    };
    let here = app
        .max_connections
        .checked_sub(elsewhere)
        .filter(|n| *n > 0)?;
    state.limits.try_user(&key, here)
}
