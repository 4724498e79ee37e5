//! Vectors produced once by the official `pusher` npm SDK 5.3.4 (app key `app-key`,
//! secret `app-secret`, `Date.now` fixed at 1700000000123): `authorizeChannel`,
//! `authenticateUser`, `lib/requests.createSignedQueryString` and `Token.sign` (webhooks).

use super::*;
use crate::pusher::config::PusherAppConfig;

const NOW: u64 = 1_700_000_000;
const POST_BODY: &str = r#"{"name":"my-event","data":"{\"x\":1}","channels":["a","b"]}"#;
const POST_QUERY: &str = "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&\
    body_md5=3fa364dce4ea6f8c95ac02800104b6e5&\
    auth_signature=943639498eaa21f9ca9f448e7bc7907e1e8913f1e4b87f7c0318e7c4fb49e03e";
const GET_QUERY: &str = "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&\
    filter_by_prefix=presence-&info=user_count&\
    auth_signature=a9f9671c3002bc95df718a7d89890b1470db1498db99de066b32ce57b2ab5f14";

fn app(secret: &str) -> PusherApp {
    PusherApp::from_config(&PusherAppConfig {
        id: "4242".into(),
        key: "app-key".into(),
        secret: secret.into(),
        ..PusherAppConfig::default()
    })
}

fn parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    body: &'a str,
) -> SignedRequest<'a> {
    SignedRequest {
        method,
        path,
        query,
        body: body.as_bytes(),
    }
}

#[test]
fn channel_and_user_auth_match_the_node_sdk() {
    let app = app("app-secret");
    let private = "app-key:7d39f26d4d655bd56b11cb2cbca1c97b1d12e8dfc0381368cab350f5f50b5487";
    assert_eq!(channel_auth(&app, "123.456", "private-room", None), private);
    assert_eq!(
        verify_channel_auth(&app, "123.456", "private-room", None, private),
        Ok(())
    );

    let data = r#"{"user_id":"u1","user_info":{"name":"Ann"}}"#;
    let presence = "app-key:c8e54ef9141f795fb4e669bc5f41d498013687216b0bf815212eff0c02e6a060";
    assert_eq!(
        channel_auth(&app, "123.456", "presence-room", Some(data)),
        presence
    );
    assert_eq!(
        verify_channel_auth(&app, "123.456", "presence-room", Some(data), presence),
        Ok(())
    );

    let user_data = r#"{"id":"u1","user_info":{"name":"Ann"}}"#;
    let user = "app-key:6af352531cf2d6fd8164fd2fd6c1431bd4527c622ef83e0fcf93e4c4939b8547";
    assert_eq!(user_auth(&app, "123.456", user_data), user);
    assert_eq!(verify_user_auth(&app, "123.456", user_data, user), Ok(()));
}

#[test]
fn channel_auth_is_refused_for_anything_else() {
    let app = app("app-secret");
    let private = "app-key:7d39f26d4d655bd56b11cb2cbca1c97b1d12e8dfc0381368cab350f5f50b5487";
    let refused = |socket: &str, channel: &str, auth: &str| {
        verify_channel_auth(&app, socket, channel, None, auth)
    };
    assert_eq!(
        refused("123.457", "private-room", private),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        refused("123.456", "private-roon", private),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        refused(
            "123.456",
            "private-room",
            &private.replace("app-key", "other")
        ),
        Err(AuthError::WrongKey)
    );
    assert_eq!(
        refused("123.456", "private-room", "no-colon"),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        refused("123.456", "private-room", &private[..private.len() - 1]),
        Err(AuthError::BadSignature),
        "a truncated signature"
    );
    let presence_data = r#"{"user_id":"u1"}"#;
    let other = r#"{"user_id":"u2"}"#;
    let auth = channel_auth(&app, "1.2", "presence-x", Some(presence_data));
    assert_eq!(
        verify_channel_auth(&app, "1.2", "presence-x", Some(other), &auth),
        Err(AuthError::BadSignature),
        "channel_data is signed"
    );
    let wrong_secret = self::app("not-the-secret");
    assert_eq!(
        verify_user_auth(
            &wrong_secret,
            "123.456",
            "{}",
            &user_auth(&app, "123.456", "{}")
        ),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn requests_signed_by_the_node_sdk_verify() {
    let app = app("app-secret");
    let post = parse(POST_QUERY);
    assert_eq!(
        body_md5(POST_BODY.as_bytes()),
        "3fa364dce4ea6f8c95ac02800104b6e5"
    );
    assert_eq!(
        request("POST", "/apps/4242/events", &post, POST_BODY).verify(&app, NOW),
        Ok(())
    );
    let get = parse(GET_QUERY);
    assert_eq!(
        request("GET", "/apps/4242/channels", &get, "").verify(&app, NOW + 600),
        Ok(())
    );
    assert_eq!(
        sign_request(
            &app,
            "GET",
            "/apps/4242/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
            b"",
            NOW
        )
        .last(),
        get.last(),
        "pushwire's signer agrees with the SDK"
    );
}

#[test]
fn tampered_requests_are_refused_with_the_reason() {
    let app = app("app-secret");
    let post = parse(POST_QUERY);
    let verify = |method, path, query: &[(String, String)], body, now| {
        request(method, path, query, body).verify(&app, now)
    };
    assert!(matches!(
        verify("POST", "/apps/4242/events", &post, POST_BODY, NOW + 601),
        Err(RequestAuthError::TimestampExpired { .. })
    ));
    assert!(matches!(
        verify("POST", "/apps/4242/events", &post, POST_BODY, NOW - 601),
        Err(RequestAuthError::TimestampExpired { .. })
    ));
    assert_eq!(
        verify("POST", "/apps/4242/events", &post, "{}", NOW),
        Err(RequestAuthError::BodyMd5)
    );
    assert!(matches!(
        verify("POST", "/apps/4243/events", &post, POST_BODY, NOW),
        Err(RequestAuthError::BadSignature { .. })
    ));
    let get = parse(GET_QUERY);
    let mut widened = get.clone();
    widened[3].1 = "private-".into();
    assert!(matches!(
        verify("GET", "/apps/4242/channels", &widened, "", NOW),
        Err(RequestAuthError::BadSignature { .. })
    ));
    let without: Vec<_> = get
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .cloned()
        .collect();
    assert_eq!(
        verify("GET", "/apps/4242/channels", &without, "", NOW),
        Err(RequestAuthError::Missing("auth_signature"))
    );
    let unsigned_body: Vec<_> = post
        .iter()
        .filter(|(k, _)| k != "body_md5")
        .cloned()
        .collect();
    assert_eq!(
        verify("POST", "/apps/4242/events", &unsigned_body, POST_BODY, NOW),
        Err(RequestAuthError::Missing("body_md5"))
    );
    assert!(matches!(
        request("POST", "/apps/4242/events", &post, POST_BODY).verify(&self::app("wrong"), NOW),
        Err(RequestAuthError::BadSignature { .. })
    ));
}

#[test]
fn body_md5_on_a_get_is_accepted_when_it_is_the_empty_body_md5() {
    // The Python SDK signs GETs with body_md5 = md5("").
    let app = app("app-secret");
    let python_style = sign_request(
        &app,
        "GET",
        "/apps/4242/channels/presence-room",
        &[("body_md5", "d41d8cd98f00b204e9800998ecf8427e")],
        b"",
        NOW,
    );
    let get = request(
        "GET",
        "/apps/4242/channels/presence-room",
        &python_style,
        "",
    );
    assert_eq!(get.verify(&app, NOW), Ok(()));
    let wrong = sign_request(&app, "GET", "/x", &[("body_md5", "00")], b"", NOW);
    assert_eq!(
        request("GET", "/x", &wrong, "").verify(&app, NOW),
        Err(RequestAuthError::BodyMd5)
    );
}

#[test]
fn webhook_bodies_are_signed_like_the_node_sdk() {
    let body = r#"{"time_ms":1700000000123,"events":[{"name":"channel_occupied","channel":"a"}]}"#;
    assert_eq!(
        webhook_signature(&AppSecret::new("app-secret"), body.as_bytes()),
        "fce3ef0e33ae7000f558bbeecb7653ca068932a75a2452230b622dc2caeb843a"
    );
}
