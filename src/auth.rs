//! Authentication and authorisation: connection and subscription JWTs (HS256 with a shared
//! secret, RS256/ES256 with public keys), API keys compared in constant time, and the
//! namespace permission rules of PROTOCOL.md section 5.
//!
//! Architecture Invariant: tokens and keys never reach a log line or an error message.

use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::{AuthConfig, NamespaceConfig, PublishPolicy, SubscribePolicy};
use crate::limits::TokenBucket;
use crate::protocol::ChannelName;

/// Claims of a connection token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// Claims of a subscription token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeClaims {
    pub sub: String,
    pub channel: String,
    pub exp: u64,
}

/// A connection token as decoded: its claims plus the `channel` claim that marks a
/// subscription token.
#[derive(Deserialize)]
struct ConnectToken {
    #[serde(flatten)]
    claims: ConnectClaims,
    channel: Option<serde::de::IgnoredAny>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("no token verification key is configured")]
    NotConfigured,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is neither an RSA nor an EC public key in PEM")]
    Parse { path: String },
}

/// Verifies tokens with every configured key.
pub struct TokenVerifier {
    keys: Vec<(DecodingKey, Algorithm)>,
    /// `auth.token_audience`: when set, a token's `aud` must name it.
    audience: Option<String>,
    /// `auth.token_issuer`: when set, a token's `iss` must equal it.
    issuer: Option<String>,
}

impl TokenVerifier {
    pub fn from_config(config: &AuthConfig) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if !config.token_hmac_secret.is_empty() {
            keys.push((
                DecodingKey::from_secret(config.token_hmac_secret.as_bytes()),
                Algorithm::HS256,
            ));
        }
        for path in &config.token_public_keys {
            keys.push(load_public_key(Path::new(path))?);
        }
        let configured = |value: &str| (!value.is_empty()).then(|| value.to_owned());
        Ok(TokenVerifier {
            keys,
            audience: configured(&config.token_audience),
            issuer: configured(&config.token_issuer),
        })
    }

    /// Verifies a connection token. A subscription token (it has a `channel` claim) is
    /// refused, so a token minted to open one channel cannot open a connection.
    pub fn verify_connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        let token: ConnectToken = self.verify(token)?;
        if token.channel.is_some() {
            return Err(TokenError::Invalid(
                "a subscription token cannot open a connection".into(),
            ));
        }
        Ok(token.claims)
    }

    pub fn verify_subscribe(&self, token: &str) -> Result<SubscribeClaims, TokenError> {
        self.verify(token)
    }

    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        if self.keys.is_empty() {
            return Err(TokenError::NotConfigured);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut last = TokenError::Invalid("no key matches the token's algorithm".into());
        for (key, alg) in self.keys.iter().filter(|(_, alg)| *alg == header.alg) {
            let validation = self.validation(*alg);
            match jsonwebtoken::decode::<T>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(TokenError::Expired);
                }
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    /// `exp` and `sub` always; `nbf` when present; `aud` and `iss` only when configured.
    /// An unconfigured `aud` is ignored: identity providers set it on every token, and
    /// jsonwebtoken would otherwise refuse any token that carries one.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(KeyError::Parse {
        path: path.display().to_string(),
    })
}

/// Mints an HS256 token (`pushwire token`, tests).
pub fn mint_hs256<T: Serialize>(
    secret: &str,
    claims: &T,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// The configured API keys, each with its own publish rate bucket.
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
    /// Per key, in the same order: the rate its bucket was made for, and the bucket.
    publish_buckets: Vec<Mutex<Option<(u32, TokenBucket)>>>,
}

/// Which configured key a request presented (an index, never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyIndex(usize);

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        ApiKeys {
            keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            publish_buckets: keys.iter().map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Checks a bearer key against every configured key in constant time.
    pub fn check(&self, presented: &[u8]) -> bool {
        self.identify(presented).is_some()
    }

    /// Finds the presented key, comparing against every configured key in constant time
    /// (only the length of a wrong key can show in the timing).
    pub fn identify(&self, presented: &[u8]) -> Option<KeyIndex> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.keys.iter().enumerate() {
            let equal = key.as_slice().ct_eq(presented);
            index = u64::conditional_select(&index, &(i as u64), equal);
            found |= equal;
        }
        bool::from(found).then(|| KeyIndex(usize::try_from(index).unwrap_or(usize::MAX)))
    }

    /// Takes one publish from `key`'s bucket, refilled at `per_sec` (0: unlimited) with a
    /// burst of one second's worth. `Err` says how long until the next one is allowed.
    pub fn take_publish(&self, key: KeyIndex, per_sec: u32, now: Instant) -> Result<(), Duration> {
        if per_sec == 0 {
            return Ok(());
        }
        let Some(slot) = self.publish_buckets.get(key.0) else {
            return Ok(());
        };
        let mut slot = slot.lock();
        if slot.as_ref().is_none_or(|(rate, _)| *rate != per_sec) {
            *slot = Some((per_sec, TokenBucket::new(per_sec, per_sec, now)));
        }
        match slot.as_mut() {
            Some((_, bucket)) => bucket.take(now),
            None => Ok(()),
        }
    }
}

/// Whether a user may subscribe to `channel` without a subscription token.
pub fn may_subscribe(ns: &NamespaceConfig, channel: &ChannelName, user: &str) -> bool {
    if !channel.admits_user(user) {
        return false;
    }
    match ns.allow_subscribe {
        SubscribePolicy::All => true,
        SubscribePolicy::Authenticated => !user.is_empty(),
        SubscribePolicy::Token => false,
    }
}

/// Whether a connected client may use the `publish` op on a channel of `ns`.
pub fn may_publish(ns: &NamespaceConfig, user: &str) -> bool {
    match ns.allow_publish {
        PublishPolicy::None => false,
        PublishPolicy::Authenticated => !user.is_empty(),
        PublishPolicy::All => true,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secret: &str) -> TokenVerifier {
        let config = AuthConfig {
            token_hmac_secret: secret.into(),
            ..AuthConfig::default()
        };
        TokenVerifier::from_config(&config).unwrap_or(TokenVerifier {
            keys: vec![],
            audience: None,
            issuer: None,
        })
    }

    #[test]
    fn hs256_round_trip_and_expiry() -> Result<(), jsonwebtoken::errors::Error> {
        let v = verifier("s3cret-s3cret");
        let claims = ConnectClaims {
            sub: "alice".into(),
            exp: unix_now() + 60,
            info: None,
            channels: None,
        };
        let token = mint_hs256("s3cret-s3cret", &claims)?;
        assert_eq!(v.verify_connect(&token).map(|c| c.sub), Ok("alice".into()));
        let expired = mint_hs256(
            "s3cret-s3cret",
            &ConnectClaims {
                exp: unix_now() - 5,
                ..claims.clone()
            },
        )?;
        assert_eq!(
            v.verify_connect(&expired).map(|c| c.sub),
            Err(TokenError::Expired)
        );
        let forged = mint_hs256("other-secret", &claims)?;
        assert!(matches!(
            v.verify_connect(&forged),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            v.verify_connect("garbage"),
            Err(TokenError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(&["key-one-1".into(), "key-two-2".into()]);
        assert!(keys.check(b"key-two-2"));
        assert_eq!(keys.identify(b"key-two-2"), Some(KeyIndex(1)));
        assert_eq!(keys.identify(b"key-one-1"), Some(KeyIndex(0)));
        assert!(!keys.check(b"key-two-"));
        assert!(!keys.check(b""));
    }

    #[test]
    fn publish_buckets_are_per_key() {
        let keys = ApiKeys::new(&["key-one-1".into(), "key-two-2".into()]);
        let now = Instant::now();
        let (one, two) = (KeyIndex(0), KeyIndex(1));
        assert!(keys.take_publish(one, 2, now).is_ok());
        assert!(keys.take_publish(one, 2, now).is_ok());
        assert!(keys.take_publish(one, 2, now).is_err());
        assert!(keys.take_publish(two, 2, now).is_ok());
        assert!(keys.take_publish(one, 0, now).is_ok());
    }

    #[test]
    fn a_subscription_token_cannot_open_a_connection() -> Result<(), jsonwebtoken::errors::Error> {
        let v = verifier("s3cret-s3cret");
        let claims = SubscribeClaims {
            sub: "alice".into(),
            channel: "news".into(),
            exp: unix_now() + 60,
        };
        let token = mint_hs256("s3cret-s3cret", &claims)?;
        assert!(matches!(
            v.verify_connect(&token),
            Err(TokenError::Invalid(_))
        ));
        assert_eq!(
            v.verify_subscribe(&token).map(|c| c.channel),
            Ok("news".into())
        );
        Ok(())
    }

    #[test]
    fn subscribe_and_publish_policies() -> Result<(), crate::protocol::InvalidChannel> {
        let mut ns = NamespaceConfig::default();
        let news = ChannelName::parse("news")?;
        assert!(may_subscribe(&ns, &news, ""));
        ns.allow_subscribe = SubscribePolicy::Authenticated;
        assert!(!may_subscribe(&ns, &news, ""));
        assert!(may_subscribe(&ns, &news, "bob"));
        ns.allow_subscribe = SubscribePolicy::Token;
        assert!(!may_subscribe(&ns, &news, "bob"));
        assert!(!may_publish(&ns, "bob"));
        ns.allow_publish = PublishPolicy::Authenticated;
        assert!(may_publish(&ns, "bob") && !may_publish(&ns, ""));
        Ok(())
    }
}
