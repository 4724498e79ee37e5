//! Pusher's HMAC-SHA256 signatures, exactly as the official SDKs make them:
//! private and presence channel authorisations (`key:hex(HMAC(secret,
//! "socket_id:channel[:channel_data]"))`), user sign-in (`socket_id::user::user_data`),
//! signed HTTP API requests (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
//! `auth_signature` over `METHOD\npath\nsorted k=v&…`), and webhook bodies
//! (`X-Pusher-Signature`). Every comparison of a presented signature is constant-time.
//! The unit tests check vectors produced by the `pusher` npm SDK.

use ring::hmac;
use subtle::ConstantTimeEq;

use super::apps::{AppSecret, PusherApp};

/// How far `auth_timestamp` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// A channel or user authorisation that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth is not of the form <app key>:<signature>")]
    Malformed,
    #[error("auth was signed for another app key")]
    WrongKey,
    #[error("invalid signature")]
    BadSignature,
}

/// A signed HTTP API request that does not verify (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing the {0} query parameter")]
    Missing(&'static str),
    #[error("unknown auth_key")]
    UnknownKey,
    #[error("unsupported auth_version {0:?}, expected 1.0")]
    Version(String),
    #[error("auth_timestamp is not a number")]
    TimestampSyntax,
    #[error(
        "timestamp expired: given timestamp ({given}) not within {MAX_CLOCK_SKEW_SECS}s of server time ({now})"
    )]
    TimestampExpired { given: u64, now: u64 },
    #[error("body_md5 does not match the MD5 of the body")]
    BodyMd5,
    #[error("invalid signature: expected HMAC SHA256 hex digest of {string_to_sign:?}")]
    BadSignature { string_to_sign: String },
}

/// `hex(HMAC_SHA256(secret, message))`, lowercase.
pub fn hmac_hex(secret: &AppSecret, message: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
    hex::encode(hmac::sign(&key, message).as_ref())
}

/// Whether `presented` is the hex signature of `message` (constant-time).
fn signature_matches(secret: &AppSecret, message: &[u8], presented: &str) -> bool {
    let expected = hmac_hex(secret, message);
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// What a channel authorisation signs: `socket_id:channel`, plus `:channel_data` for
/// presence channels (`channel_data` exactly as the client sent it).
fn channel_string(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

fn user_string(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The `auth` an app's auth endpoint returns for a channel (as `authorizeChannel` does).
pub fn channel_auth(
    app: &PusherApp,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let signed = channel_string(socket_id, channel, channel_data);
    format!("{}:{}", app.key, hmac_hex(&app.secret, signed.as_bytes()))
}

/// Checks the `auth` of a `pusher:subscribe` to a private or presence channel.
pub fn verify_channel_auth(
    app: &PusherApp,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> Result<(), AuthError> {
    let signed = channel_string(socket_id, channel, channel_data);
    verify_auth(app, signed.as_bytes(), auth)
}

/// The `auth` of a user sign-in (as `authenticateUser` does).
pub fn user_auth(app: &PusherApp, socket_id: &str, user_data: &str) -> String {
    let signed = user_string(socket_id, user_data);
    format!("{}:{}", app.key, hmac_hex(&app.secret, signed.as_bytes()))
}

/// Checks the `auth` of a `pusher:signin`.
pub fn verify_user_auth(
    app: &PusherApp,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> Result<(), AuthError> {
    verify_auth(app, user_string(socket_id, user_data).as_bytes(), auth)
}

fn verify_auth(app: &PusherApp, signed: &[u8], auth: &str) -> Result<(), AuthError> {
    let (key, signature) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if key != app.key {
        return Err(AuthError::WrongKey);
    }
    if signature_matches(&app.secret, signed, signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// `X-Pusher-Signature` of a webhook body.
pub fn webhook_signature(secret: &AppSecret, body: &[u8]) -> String {
    hmac_hex(secret, body)
}

/// `hex(md5(body))`, the `body_md5` parameter.
pub fn body_md5(body: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(body))
}

/// A signed HTTP API request, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET` or `POST`, as sent.
    pub method: &'a str,
    /// The request path exactly as sent (not percent-decoded), e.g. `/apps/1/events`.
    pub path: &'a str,
    /// The query parameters, percent-decoded, in the order sent.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

impl<'a> SignedRequest<'a> {
    /// The value of the query parameter `name` (the first, if repeated).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `METHOD\npath\nk=v&…`: every parameter but `auth_signature`, keys lowercased,
    /// sorted by key, values as decoded, not re-escaped.
    pub fn string_to_sign(&self) -> String {
        let mut params: Vec<(String, &str)> = self
            .query
            .iter()
            .filter(|(k, _)| k != "auth_signature")
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        params.sort();
        let joined: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path,
            joined.join("&")
        )
    }

    /// Verifies the request against `app` at `now` (unix seconds). `body_md5` is
    /// required with a body and checked whenever present (the Python SDK sends the MD5
    /// of the empty body on GETs).
    pub fn verify(&self, app: &PusherApp, now: u64) -> Result<(), RequestAuthError> {
        let key = self
            .param("auth_key")
            .ok_or(RequestAuthError::Missing("auth_key"))?;
        if key != app.key {
            return Err(RequestAuthError::UnknownKey);
        }
        let signature = self
            .param("auth_signature")
            .ok_or(RequestAuthError::Missing("auth_signature"))?;
        let version = self
            .param("auth_version")
            .ok_or(RequestAuthError::Missing("auth_version"))?;
        if version != "1.0" {
            return Err(RequestAuthError::Version(version.to_owned()));
        }
        let given: u64 = self
            .param("auth_timestamp")
            .ok_or(RequestAuthError::Missing("auth_timestamp"))?
            .parse()
            .map_err(|_| RequestAuthError::TimestampSyntax)?;
        if given.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
            return Err(RequestAuthError::TimestampExpired { given, now });
        }
        match self.param("body_md5") {
            Some(md5) if md5 != body_md5(self.body) => return Err(RequestAuthError::BodyMd5),
            None if !self.body.is_empty() => return Err(RequestAuthError::Missing("body_md5")),
            _ => {}
        }
        let string_to_sign = self.string_to_sign();
        if signature_matches(&app.secret, string_to_sign.as_bytes(), signature) {
            Ok(())
        } else {
            Err(RequestAuthError::BadSignature { string_to_sign })
        }
    }
}

/// The query parameters a server SDK adds to a request (`auth_*`, `body_md5`), for
/// pushwire's own tests and tools: `params` plus the signature fields.
pub fn sign_request(
    app: &PusherApp,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    now: u64,
) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    query.push(("auth_key".into(), app.key.clone()));
    query.push(("auth_timestamp".into(), now.to_string()));
    query.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        query.push(("body_md5".into(), body_md5(body)));
    }
    let request = SignedRequest {
        method,
        path,
        query: &query,
        body,
    };
    let signature = hmac_hex(&app.secret, request.string_to_sign().as_bytes());
    query.push(("auth_signature".into(), signature));
    query
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
