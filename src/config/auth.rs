//! `[api]` and `[auth]`: who may call the HTTP API (bearer keys, body and rate bounds) and
//! how connection and subscription tokens are verified.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer keys for `/api/*`; empty: a random key is generated at startup and logged once.
    pub keys: Vec<String>,
    /// Largest request body and largest publication data, in bytes.
    pub max_publish_bytes: usize,
    /// Publish and broadcast requests per second per API key (429 beyond it); 0: unlimited.
    pub publish_rate_per_sec: u32,
    /// Commands of one `parallel` `/api/batch` running at once; the others wait their
    /// turn (replies keep their order). Greater than 0.
    pub batch_parallelism: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            keys: Vec::new(),
            max_publish_bytes: 64 * 1024,
            publish_rate_per_sec: 0,
            batch_parallelism: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 connection and subscription tokens, at least 32 bytes;
    /// empty: HS256 off.
    pub token_hmac_secret: String,
    /// PEM files with RSA or EC public keys for RS256/ES256 tokens (several for rotation).
    pub token_public_keys: Vec<String>,
    /// Seconds a connection may stay open past its token's `exp` before close 4002.
    pub expiry_grace_secs: u64,
    /// When set, a token's `aud` (a string or a list) must contain it; empty: `aud` is
    /// not checked.
    pub token_audience: String,
    /// When set, a token's `iss` must equal it; empty: `iss` is not checked.
    pub token_issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_hmac_secret: String::new(),
            token_public_keys: Vec::new(),
            expiry_grace_secs: 10,
            token_audience: String::new(),
            token_issuer: String::new(),
        }
    }
}
