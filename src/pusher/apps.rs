//! The registry of configured Pusher apps, looked up by key (WebSocket `/app/{key}`, the
//! `auth_key` of a signed request) and by id (`/apps/{id}/…`). Built once from `[pusher]`
//! at startup and shared through `AppState::pusher`; apps change only with a restart.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{PusherAppConfig, PusherConfig, PusherWebhookConfig};

/// An app secret. `Debug` and `Display` never show it; only the signing code reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret(String);

impl AppSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        AppSecret(secret.into())
    }

    /// The secret's bytes, for HMAC keys.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

/// One configured app.
#[derive(Debug)]
pub struct PusherApp {
    pub id: String,
    pub key: String,
    pub secret: AppSecret,
    pub enabled: bool,
    pub client_events: bool,
    pub client_event_rate_per_sec: u32,
    /// 0: unlimited.
    pub max_connections: usize,
    pub max_event_bytes: usize,
    pub max_presence_members: usize,
    pub max_presence_member_bytes: usize,
    pub webhooks: Vec<PusherWebhookConfig>,
}

impl PusherApp {
    pub fn from_config(config: &PusherAppConfig) -> Self {
        PusherApp {
            id: config.id.clone(),
            key: config.key.clone(),
            secret: AppSecret::new(config.secret.clone()),
            enabled: config.enabled,
            client_events: config.client_events,
            client_event_rate_per_sec: config.client_event_rate_per_sec,
            max_connections: config.max_connections,
            max_event_bytes: config.max_event_bytes,
            max_presence_members: config.max_presence_members,
            max_presence_member_bytes: config.max_presence_member_bytes,
            webhooks: config.webhooks.clone(),
        }
    }
}

/// Every app, by key and by id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PusherApps {
    by_key: Arc<HashMap<String, Arc<PusherApp>>>,
    by_id: Arc<HashMap<String, Arc<PusherApp>>>,
}

impl PusherApps {
    /// The registry of a validated `[pusher]` section (ids and keys are unique).
    pub fn from_config(config: &PusherConfig) -> Self {
        let apps: Vec<Arc<PusherApp>> = config
            .apps
            .iter()
            .map(|app| Arc::new(PusherApp::from_config(app)))
            .collect();
        PusherApps {
            by_key: Arc::new(apps.iter().map(|a| (a.key.clone(), a.clone())).collect()),
            by_id: Arc::new(apps.iter().map(|a| (a.id.clone(), a.clone())).collect()),
        }
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<PusherApp>> {
        self.by_key.get(key)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<PusherApp>> {
        self.by_id.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every app, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PusherApp>> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn apps_are_found_by_key_and_by_id() -> Result<(), crate::config::ConfigError> {
        let config = Config::from_toml(
            "[[pusher.apps]]\nid = \"1\"\nkey = \"one\"\nsecret = \"secret-one-s3cr3t\"\n\
             [[pusher.apps]]\nid = \"2\"\nkey = \"two\"\nsecret = \"secret-two-s3cr3t\"\nclient_events = true\n",
        )?;
        let apps = PusherApps::from_config(&config.pusher);
        assert_eq!(apps.len(), 2);
        assert_eq!(apps.by_key("two").map(|a| a.id.as_str()), Some("2"));
        assert_eq!(apps.by_id("1").map(|a| a.key.as_str()), Some("one"));
        assert!(apps.by_id("2").is_some_and(|a| a.client_events));
        assert!(apps.by_key("1").is_none() && apps.by_id("one").is_none());
        let printed = format!("{apps:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        Ok(())
    }
}
