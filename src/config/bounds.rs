//! Checks of values that are well-typed but would crash the node or make it misbehave:
//! zero durations and buffer sizes the runtime cannot work with, and pairs of keys whose
//! order matters (a node timeout shorter than the heartbeat, a publication larger than a
//! client's queue). Each error names the key to change.

use super::{Config, ConfigError};

/// Checks every relation between keys and every zero that `validate`'s simple
/// greater-than-zero list does not cover.
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    check_redis(config)?;
    if config.api.batch_parallelism == 0 {
        return invalid("api.batch_parallelism", "must be greater than 0");
    }
    check_publication_fits_queue(config)?;
    check_write_delay(config)?;
    check_trusted_proxies(config)?;
    check_token_secret(config)?;
    Ok(())
}

/// A delayed write is still a write: it must stay well inside the write timeout.
fn check_write_delay(config: &Config) -> Result<(), ConfigError> {
    if config.client.write_delay_ms > 1000 {
        return invalid("client.write_delay_ms", "at most 1000 (one second)");
    }
    Ok(())
}

fn invalid(key: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    })
}

/// Redis timings: each is a timer or a buffer that cannot be zero (a zero interval or
/// channel capacity panics, a zero timeout fails every command, a zero presence TTL
/// deletes presence as it is written), and nodes must outlive a heartbeat.
fn check_redis(config: &Config) -> Result<(), ConfigError> {
    let redis = &config.redis;
    let positive = [
        ("redis.connect_timeout_ms", redis.connect_timeout_ms),
        ("redis.command_timeout_ms", redis.command_timeout_ms),
        ("redis.handoff_buffer", redis.handoff_buffer as u64),
        (
            "redis.handoff_buffer_bytes",
            redis.handoff_buffer_bytes as u64,
        ),
        (
            "redis.gap_fill_max_messages",
            redis.gap_fill_max_messages as u64,
        ),
        ("redis.probe_interval_ms", redis.probe_interval_ms),
        ("redis.heartbeat_interval_ms", redis.heartbeat_interval_ms),
        ("redis.node_timeout_ms", redis.node_timeout_ms),
        ("redis.presence_ttl_secs", redis.presence_ttl_secs),
    ];
    for (key, value) in positive {
        if value == 0 {
            return invalid(key, "must be greater than 0");
        }
    }
    if redis.node_timeout_ms <= redis.heartbeat_interval_ms {
        return invalid(
            "redis.node_timeout_ms",
            format!(
                "must be greater than redis.heartbeat_interval_ms ({}), or nodes drop each other \
                 between two heartbeats",
                redis.heartbeat_interval_ms
            ),
        );
    }
    Ok(())
}

/// One publication of `api.max_publish_bytes` (or a Pusher app's event of
/// `max_event_bytes`) must fit into an empty client queue: a larger one evicts every
/// subscriber (4008). Data grows when it is rendered for the other encoding (binary data
/// becomes base64 for JSON clients, a third more) and gains its envelope, so the queue
/// must hold at least twice the largest publication.
fn check_publication_fits_queue(config: &Config) -> Result<(), ConfigError> {
    let queue = config.client.queue_max_bytes;
    let api = (
        "api.max_publish_bytes".to_owned(),
        config.api.max_publish_bytes,
    );
    let apps = config.pusher.apps.iter().enumerate().map(|(index, app)| {
        (
            format!("pusher.apps[{index}].max_event_bytes"),
            app.max_event_bytes,
        )
    });
    for (key, largest) in std::iter::once(api).chain(apps) {
        if largest.saturating_mul(2) > queue {
            return invalid(
                &key,
                format!(
                    "must be at most half of client.queue_max_bytes ({queue}): a publication \
                     larger than a client's queue evicts every subscriber"
                ),
            );
        }
    }
    Ok(())
}

/// Every trusted proxy entry must parse: a typo would silently trust nobody (or, worse,
/// be read as another network).
fn check_trusted_proxies(config: &Config) -> Result<(), ConfigError> {
    let server = &config.server;
    for (index, entry) in server.trusted_proxies.iter().enumerate() {
        if crate::limits::parse_network(entry).is_none() {
            return invalid(
                &format!("server.trusted_proxies[{index}]"),
                format!("{entry:?} is not an IP address or a CIDR network like 10.0.0.0/8"),
            );
        }
    }
    Ok(())
}

/// Shortest accepted `auth.token_hmac_secret`: HS256 keys shorter than the hash output
/// (RFC 7518 section 3.2) can be brute-forced offline from any token.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

fn check_token_secret(config: &Config) -> Result<(), ConfigError> {
    let secret = &config.auth.token_hmac_secret;
    if !secret.is_empty() && secret.len() < MIN_HMAC_SECRET_BYTES {
        return invalid(
            "auth.token_hmac_secret",
            format!(
                "must be at least {MIN_HMAC_SECRET_BYTES} bytes (it is {}); generate one with \
                 `openssl rand -hex 32`",
                secret.len()
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_redis_timings_name_their_key() {
        for key in [
            "connect_timeout_ms",
            "command_timeout_ms",
            "handoff_buffer",
            "handoff_buffer_bytes",
            "gap_fill_max_messages",
            "probe_interval_ms",
            "heartbeat_interval_ms",
            "node_timeout_ms",
            "presence_ttl_secs",
        ] {
            let error = Config::error_of(&format!("[redis]\n{key} = 0\n"));
            assert!(error.contains(&format!("redis.{key}")), "{key}: {error:?}");
        }
    }

    #[test]
    fn inverted_pairs_are_refused() {
        let error =
            Config::error_of("[redis]\nheartbeat_interval_ms = 5000\nnode_timeout_ms = 5000\n");
        assert!(error.contains("redis.node_timeout_ms"), "{error}");
        let error = Config::error_of(
            "[client]\nqueue_max_bytes = 100000\n[api]\nmax_publish_bytes = 60000\n",
        );
        assert!(error.contains("api.max_publish_bytes"), "{error}");
        assert!(Config::from_toml("[client]\nqueue_max_bytes = 131072\n").is_ok());
        let app = "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
        let error = Config::error_of(&format!(
            "[client]\nqueue_max_bytes = 131072\n{app}max_event_bytes = 70000\n"
        ));
        assert!(error.contains("pusher.apps[0].max_event_bytes"), "{error}");
        assert!(Config::from_toml(&format!("{app}max_event_bytes = 65536\n")).is_ok());
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        let error =
            Config::error_of("[auth]\ntoken_hmac_secret = \"0123456789abcdef0123456789abcde\"\n");
        assert!(error.contains("auth.token_hmac_secret"), "{error}");
        assert!(
            !error.contains("0123456789abcdef"),
            "the secret is not echoed: {error}"
        );
        assert!(
            Config::from_toml("[auth]\ntoken_hmac_secret = \"0123456789abcdef0123456789abcdef\"\n")
                .is_ok()
        );
    }
}
