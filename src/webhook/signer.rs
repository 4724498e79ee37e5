//! How a webhook body is signed: the headers an endpoint checks. Pusher apps sign with
//! `X-Pusher-Key` and `X-Pusher-Signature` (what the Pusher server SDKs' webhook
//! validators check); native endpoints get the same HMAC in a configured header. The
//! HMAC itself is `pusher::signature`'s, the one home of request and body signatures.

use http::{HeaderName, HeaderValue};

use crate::pusher::apps::AppSecret;
use crate::pusher::signature::{hmac_hex, webhook_signature};

/// Signs webhook bodies for one endpoint (its `Debug` never shows a secret).
#[derive(Debug, Clone)]
pub enum Signer {
    /// `X-Pusher-Key: <key>`, `X-Pusher-Signature: hex(HMAC_SHA256(secret, body))`.
    Pusher { key: String, secret: AppSecret },
    /// `<header>: hex(HMAC_SHA256(secret, body))`.
    Native {
        header: HeaderName,
        secret: AppSecret,
    },
}

impl Signer {
    /// The headers that sign `body`.
    pub fn headers(&self, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            Signer::Pusher { key, secret } => {
                let mut headers = vec![(
                    HeaderName::from_static("x-pusher-signature"),
                    hex_value(&webhook_signature(secret, body)),
                )];
                if let Ok(key) = HeaderValue::from_str(key) {
                    headers.push((HeaderName::from_static("x-pusher-key"), key));
                }
                headers
            }
            Signer::Native { header, secret } => {
                vec![(header.clone(), hex_value(&hmac_hex(secret, body)))]
            }
        }
    }

    /// The protocol label of the endpoint's metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            Signer::Pusher { .. } => "pusher",
            Signer::Native { .. } => "native",
        }
    }
}

fn hex_value(hex: &str) -> HeaderValue {
    // Lowercase hex digits are always a valid header value.
    HeaderValue::from_str(hex).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hmac_matches_rfc_4231_case_2() {
        let signer = Signer::Native {
            header: HeaderName::from_static("x-sig"),
            secret: AppSecret::new("Jefe"),
        };
        let headers = signer.headers(b"what do ya want for nothing?");
        assert_eq!(
            headers[0].1.to_str().ok(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn pusher_signs_with_key_and_signature_and_debug_hides_the_secret() {
        let signer = Signer::Pusher {
            key: "app-key".into(),
            secret: AppSecret::new("app-secret"),
        };
        let headers = signer.headers(b"{}");
        let get = |name: &str| {
            headers
                .iter()
                .find(|(h, _)| h == name)
                .and_then(|(_, v)| v.to_str().ok().map(str::to_owned))
        };
        assert_eq!(get("x-pusher-key").as_deref(), Some("app-key"));
        assert_eq!(
            get("x-pusher-signature"),
            Some(hmac_hex(&AppSecret::new("app-secret"), b"{}"))
        );
        assert!(!format!("{signer:?}").contains("app-secret"));
    }
}
