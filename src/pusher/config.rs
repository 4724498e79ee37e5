//! The `[pusher]` section: the Pusher apps this node serves (`[[pusher.apps]]`, each with
//! its id, key, secret, limits and `[[pusher.apps.webhooks]]`), and its validation, which
//! names the offending key (`pusher.apps[1].id`).
//!
//! Secrets live here as plain strings because the file and the environment give them so;
//! `PusherApps` wraps them in a type whose `Debug` hides them, and `check-config` redacts
//! them (`redact_secrets`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Everything about the Pusher protocol front end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// The apps served; none: the Pusher endpoints answer "unknown app".
    pub apps: Vec<PusherAppConfig>,
}

/// One Pusher app: its own channel space, limits and webhooks.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherAppConfig {
    /// Numeric string (the Python SDK accepts only digits); the `{id}` of `/apps/{id}/…`.
    pub id: String,
    /// Public key: the `{key}` of `/app/{key}` and `auth_key` of signed API requests.
    pub key: String,
    /// Signs channel and user authorisations, API requests and webhooks. Never logged.
    pub secret: String,
    /// `false`: the app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// Let clients send `client-*` events on private and presence channels.
    pub client_events: bool,
    /// `client-*` events one connection may send per second (`pusher:error` 4301 beyond).
    pub client_event_rate_per_sec: u32,
    /// Open Pusher connections of this app on this node (4004 beyond it); 0: unlimited.
    pub max_connections: usize,
    /// Largest event `data`, in bytes, through the HTTP API (413) or a client event.
    pub max_event_bytes: usize,
    /// Distinct users in one presence channel.
    pub max_presence_members: usize,
    /// Largest presence `user_info` / `channel_data`, in bytes.
    pub max_presence_member_bytes: usize,
    /// Where this app's webhooks go.
    pub webhooks: Vec<PusherWebhookConfig>,
}

/// One webhook endpoint of an app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherWebhookConfig {
    /// `http://` or `https://` URL that receives the batched, signed POSTs.
    pub url: String,
    /// The event names sent to it (`WEBHOOK_EVENTS`); empty: all.
    pub events: Vec<String>,
}

/// Every webhook event name Pusher defines, and so every valid `events` entry.
pub const WEBHOOK_EVENTS: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
];

/// Pusher's default limit on event data (10 KB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 10 * 1024;

impl Default for PusherAppConfig {
    fn default() -> Self {
        PusherAppConfig {
            id: String::new(),
            key: String::new(),
            secret: String::new(),
            enabled: true,
            client_events: false,
            client_event_rate_per_sec: 10,
            max_connections: 0,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_presence_members: 100,
            max_presence_member_bytes: 2048,
            webhooks: Vec::new(),
        }
    }
}

/// Hides the secret (configs are logged with `{:?}` in places).
impl std::fmt::Debug for PusherAppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherAppConfig")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("client_events", &self.client_events)
            .field("max_connections", &self.max_connections)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

impl PusherConfig {
    /// Checks every app; errors name the key, e.g. `pusher.apps[1].key`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (index, app) in self.apps.iter().enumerate() {
            let at = |field: &str| format!("pusher.apps[{index}].{field}");
            app.validate(&at)?;
            if !ids.insert(app.id.as_str()) {
                return invalid(at("id"), format!("app id {:?} is used twice", app.id));
            }
            if !keys.insert(app.key.as_str()) {
                return invalid(at("key"), format!("app key {:?} is used twice", app.key));
            }
        }
        Ok(())
    }

    /// The same configuration with every app secret replaced by `mask` (`check-config`).
    pub fn redact_secrets(&mut self, mask: &str) {
        for app in &mut self.apps {
            app.secret = mask.to_owned();
        }
    }
}

impl PusherAppConfig {
    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.id.is_empty() || !self.id.bytes().all(|b| b.is_ascii_digit()) {
            return invalid(
                at("id"),
                "must be a non-empty string of digits, like \"4242\"",
            );
        }
        if self.key.is_empty() || !self.key.bytes().all(is_key_byte) {
            return invalid(
                at("key"),
                "must be non-empty letters, digits, '-', '_' or '.' (it is a URL path segment)",
            );
        }
        if self.secret.is_empty() {
            return invalid(at("secret"), "must not be empty");
        }
        if self.max_event_bytes == 0 {
            return invalid(at("max_event_bytes"), "must be greater than 0");
        }
        if self.max_presence_members == 0 {
            return invalid(at("max_presence_members"), "must be greater than 0");
        }
        if self.max_presence_member_bytes == 0 {
            return invalid(at("max_presence_member_bytes"), "must be greater than 0");
        }
        for (index, hook) in self.webhooks.iter().enumerate() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return invalid(
                    at(&format!("webhooks[{index}].url")),
                    "must be an http:// or https:// URL",
                );
            }
            if let Some(unknown) = hook
                .events
                .iter()
                .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
            {
                return invalid(
                    at(&format!("webhooks[{index}].events")),
                    format!("unknown event {unknown:?}; expected some of {WEBHOOK_EVENTS:?}"),
                );
            }
        }
        Ok(())
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn invalid(key: String, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        message: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, Overrides};

    const TWO_APPS: &str = r#"
[[pusher.apps]]
id = "4242"
key = "app-key"
secret = "app-secret"
client_events = true
[[pusher.apps.webhooks]]
url = "http://backend.internal/pusher/webhook"
events = ["channel_occupied", "channel_vacated"]

[[pusher.apps]]
id = "7"
key = "other-key"
secret = "other-secret"
"#;

    #[test]
    fn apps_load_with_the_issue_key_names_and_defaults() -> Result<(), ConfigError> {
        let config = Config::from_toml(TWO_APPS)?;
        let [first, second] = config.pusher.apps.as_slice() else {
            panic!("expected two apps, got {:?}", config.pusher.apps);
        };
        assert_eq!((first.id.as_str(), first.key.as_str()), ("4242", "app-key"));
        assert!(first.client_events);
        assert_eq!(first.webhooks.len(), 1);
        assert_eq!(first.webhooks[0].events.len(), 2);
        assert!(!second.client_events, "client events are off by default");
        assert!(second.webhooks.is_empty());
        assert_eq!(second.max_event_bytes, 10 * 1024);
        assert_eq!(second.client_event_rate_per_sec, 10);
        assert!(second.enabled);
        Ok(())
    }

    #[test]
    fn errors_name_the_app_and_key() {
        let app = |fields: &str| format!("[[pusher.apps]]\n{fields}\n");
        let base = "key = \"k\"\nsecret = \"s\"";
        assert!(
            Config::error_of(&app(&format!("id = \"12a\"\n{base}"))).contains("pusher.apps[0].id")
        );
        assert!(Config::error_of(&app(base)).contains("pusher.apps[0].id"));
        assert!(
            Config::error_of(&app("id = \"1\"\nkey = \"a/b\"\nsecret = \"s\""))
                .contains("pusher.apps[0].key")
        );
        assert!(
            Config::error_of(&app("id = \"1\"\nkey = \"k\"")).contains("pusher.apps[0].secret"),
            "a missing secret is refused"
        );
        let twice_id = format!(
            "{}{}",
            app("id = \"1\"\nkey = \"a\"\nsecret = \"s\""),
            app("id = \"1\"\nkey = \"b\"\nsecret = \"s\"")
        );
        assert!(Config::error_of(&twice_id).contains("pusher.apps[1].id"));
        let twice_key = format!(
            "{}{}",
            app("id = \"1\"\nkey = \"a\"\nsecret = \"s\""),
            app("id = \"2\"\nkey = \"a\"\nsecret = \"s\"")
        );
        assert!(Config::error_of(&twice_key).contains("pusher.apps[1].key"));
        let hook = format!(
            "{}[[pusher.apps.webhooks]]\nurl = \"ftp://x\"\n",
            app("id = \"1\"\nkey = \"a\"\nsecret = \"s\"")
        );
        assert!(Config::error_of(&hook).contains("pusher.apps[0].webhooks[0].url"));
        let events = format!(
            "{}[[pusher.apps.webhooks]]\nurl = \"http://x\"\nevents = [\"channel_occupid\"]\n",
            app("id = \"1\"\nkey = \"a\"\nsecret = \"s\"")
        );
        assert!(Config::error_of(&events).contains("pusher.apps[0].webhooks[0].events"));
        assert!(
            Config::error_of(&app(
                "id = \"1\"\nkey = \"a\"\nsecret = \"s\"\nclient_event = true"
            ))
            .contains("client_event")
        );
    }

    #[test]
    fn debug_output_hides_the_secret() -> Result<(), ConfigError> {
        let config = Config::from_toml(TWO_APPS)?;
        let printed = format!("{config:?}");
        assert!(!printed.contains("app-secret") && !printed.contains("other-secret"));
        assert!(printed.contains("app-key"));
        Ok(())
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn environment_sets_the_apps() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "PUSHWIRE_PUSHER__APPS",
                r#"[{id="4242",key="env-key",secret="env-secret",client_events=true}]"#,
            );
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            let apps = &config.pusher.apps;
            assert_eq!(apps.len(), 1);
            assert_eq!(apps[0].id, "4242");
            assert_eq!(apps[0].key, "env-key");
            assert_eq!(apps[0].secret, "env-secret");
            assert!(apps[0].client_events);
            assert_eq!(
                apps[0].max_event_bytes,
                10 * 1024,
                "omitted keys take defaults"
            );
            jail.set_env("PUSHWIRE_PUSHER__APPS", r#"[{id="x",key="k",secret="s"}]"#);
            let err = Config::load(None, &Overrides::default())
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("pusher.apps[0].id")));
            Ok(())
        });
    }
}
