//! Typed configuration: embedded defaults, a TOML file, `PUSHWIRE_*` environment overrides
//! (`PUSHWIRE_CLIENT__PING_INTERVAL_SECS=5`), then command-line flags, in that order.
//! `validate` checks every value and names the offending key.
//!
//! Every limit the server enforces lives here with a default; `config/pushwire.toml`
//! documents each key. One module per section (`server`, `client`, `auth` for `[api]` and
//! `[auth]`, `log`, `broker` for `[broker]` and `[redis]`, `namespace`); the sections of
//! other subsystems (`[proxy]`, `[tracing]`, `[pusher]`, `[webhooks]`) live with them.
//! `validate` holds the per-key checks, `bounds` the relations between keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

mod auth;
mod bounds;
mod broker;
mod client;
mod log;
mod namespace;
mod server;
mod validate;

pub use auth::{ApiConfig, AuthConfig};
pub use bounds::MIN_HMAC_SECRET_BYTES;
pub use broker::{BrokerConfig, BrokerKind, RedisConfig};
pub use client::ClientConfig;
pub use log::{LogConfig, LogFormat};
pub use namespace::{DEFAULT_NAMESPACE, NamespaceConfig, PublishPolicy, SubscribePolicy};
pub use server::ServerConfig;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Shown in `/api/info` and `connected.node`; empty: hostname plus a random suffix.
    pub node_name: String,
    /// Lets a `connect` without a token in, as user "".
    pub allow_anonymous: bool,
    pub server: ServerConfig,
    pub client: ClientConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub redis: RedisConfig,
    /// The backend proxy (`crate::proxy`); off while no URL is set.
    pub proxy: crate::proxy::ProxyConfig,
    /// OpenTelemetry traces (`crate::telemetry`); off by default.
    pub tracing: crate::telemetry::TracingConfig,
    /// Channel namespaces by name; `default` holds channels without `:`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// The Pusher protocol front end: `[[pusher.apps]]` (src/pusher/config.rs).
    pub pusher: crate::pusher::PusherConfig,
    /// Native webhooks, and the delivery settings every webhook endpoint shares.
    pub webhooks: crate::webhook::WebhooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            allow_anonymous: true,
            server: ServerConfig::default(),
            client: ClientConfig::default(),
            api: ApiConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            broker: BrokerConfig::default(),
            redis: RedisConfig::default(),
            proxy: crate::proxy::ProxyConfig::default(),
            tracing: crate::telemetry::TracingConfig::default(),
            namespaces: BTreeMap::from([(
                DEFAULT_NAMESPACE.to_owned(),
                NamespaceConfig::default(),
            )]),
            pusher: crate::pusher::PusherConfig::default(),
            webhooks: crate::webhook::WebhooksConfig::default(),
        }
    }
}

/// A configuration that cannot be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: String },
    /// Shown once: figment's message is the whole story (no separate cause to repeat).
    #[error(transparent)]
    Load(Box<figment::Error>),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Values given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
}

impl Config {
    /// Loads defaults, then `file` (if any), then `PUSHWIRE_*` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    path: path.display().to_string(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env_overrides());
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults (tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// What loading `text` fails with, empty when it loads (tests of validation).
    #[cfg(test)]
    pub(crate) fn error_of(text: &str) -> String {
        Config::from_toml(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// The namespace options for a channel, or `None` when its namespace is undeclared.
    pub fn namespace_of(&self, channel: &crate::protocol::ChannelName) -> Option<&NamespaceConfig> {
        self.namespaces
            .get(channel.namespace().unwrap_or(DEFAULT_NAMESPACE))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)))
    }
}

/// `PUSHWIRE_<SECTION>__<KEY>` variables, plus the top-level keys (`PUSHWIRE_NODE_NAME`,
/// `PUSHWIRE_ALLOW_ANONYMOUS`). Other `PUSHWIRE_*` variables (`PUSHWIRE_CONFIG`, or a
/// deployment's own like `PUSHWIRE_BIN`) are not configuration and are left alone.
fn env_overrides() -> Env {
    Env::prefixed("PUSHWIRE_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key.contains("__") || key == "node_name" || key == "allow_anonymous"
        })
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serve_one_node() -> Result<(), ConfigError> {
        let config = Config::from_toml("")?;
        assert_eq!(config.broker.kind, BrokerKind::Memory);
        assert!(config.allow_anonymous);
        assert!(config.namespaces.contains_key(DEFAULT_NAMESPACE));
        Ok(())
    }

    #[test]
    fn file_namespaces_add_to_the_default_one() -> Result<(), ConfigError> {
        let config =
            Config::from_toml("[namespaces.chat]\nhistory_size = 10\nallow_publish = \"all\"\n")?;
        assert!(config.namespaces.contains_key(DEFAULT_NAMESPACE));
        assert_eq!(config.namespaces["chat"].history_size, 10);
        assert_eq!(config.namespaces["chat"].allow_publish, PublishPolicy::All);
        assert_eq!(config.namespaces["chat"].history_ttl_secs, 300);
        Ok(())
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn environment_overrides_sections_and_ignores_foreign_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PUSHWIRE_CLIENT__PING_INTERVAL_SECS", "7");
            jail.set_env("PUSHWIRE_API__KEYS", "[\"env-key-123\"]");
            jail.set_env("PUSHWIRE_NODE_NAME", "from-env");
            jail.set_env("PUSHWIRE_BIN", "/usr/bin/pushwire");
            jail.set_env("PUSHWIRE_CONFIG", "ignored.toml");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.client.ping_interval_secs, 7);
            assert_eq!(config.api.keys, vec!["env-key-123".to_owned()]);
            assert_eq!(config.node_name, "from-env");
            jail.set_env("PUSHWIRE_CLIENT__PING_INTERVALL", "7");
            assert!(
                Config::load(None, &Overrides::default()).is_err(),
                "typos in a section are still caught"
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("[client]\nping_interval_secs = 0\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("client.ping_interval_secs")));
        let err = Config::from_toml("[client]\nping_intervall = 3\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("ping_intervall")));
        let err = Config::from_toml("[server]\nlisten = \"nope\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.listen")));
        let err = Config::from_toml("[namespaces.chat]\nallow_publish = \"maybe\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("allow_publish")));
        let err = Config::from_toml("[server]\nworker_threads = 100000\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.worker_threads")));
        let err = Config::from_toml("[server]\nsocket_send_buffer_bytes = 100\n")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("server.socket_send_buffer_bytes")));
    }

    #[test]
    fn worker_threads_default_to_the_cores() -> Result<(), ConfigError> {
        let config = Config::from_toml("[server]\nworker_threads = 1\n")?;
        assert_eq!(config.server.threads(), 1);
        assert!(Config::default().server.threads() >= 1);
        Ok(())
    }
}
