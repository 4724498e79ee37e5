//! Authentication (PROTOCOL.md section 5): connection tokens signed with HS256, RS256 and
//! ES256 (several public keys for rotation), where a token may arrive, what a bad or
//! expired one gets, the `channels` claim, subscription tokens, user channels, `refresh`
//! with expiry, and tokens minted by `pushwire token`.

mod support;

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushwire::auth::{mint_hs256, unix_now};
use serde_json::{Value, json};
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const SECRET: &str = "auth-test-secret-0123456789abcdef";

fn claims(user: &str, ttl_secs: i64) -> Value {
    json!({ "sub": user, "exp": unix_now() as i64 + ttl_secs })
}

fn hs256(claims: &Value) -> TestResult<String> {
    Ok(mint_hs256(SECRET, claims)?)
}

fn subscription(user: &str, channel: &str, ttl_secs: i64) -> TestResult<String> {
    hs256(&json!({ "sub": user, "channel": channel, "exp": unix_now() as i64 + ttl_secs }))
}

fn hs256_config(extra: &str) -> String {
    format!("{extra}\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n")
}

/// Opens a WebSocket, sends `connect` with `fields`, and waits for the server to close it.
async fn refused(server: &TestServer, fields: Value) -> TestResult<(u16, Value)> {
    let mut client = WsClient::open(&server.ws_url(), Encoding::Json).await?;
    let mut connect = json!({ "op": "connect", "id": 1 });
    if let (Some(into), Some(from)) = (connect.as_object_mut(), fields.as_object()) {
        into.extend(from.clone());
    }
    client.send(connect).await?;
    let (code, seen) = client.expect_close().await?;
    let disconnect = seen.last().cloned().unwrap_or(Value::Null);
    Ok((code, disconnect))
}

fn error_code(reply: &Value) -> Option<u64> {
    (reply["op"] == "error")
        .then(|| reply["code"].as_u64())
        .flatten()
}

/// A key pair made by openssl: the private key signs tokens, the public key file goes in
/// `auth.token_public_keys`.
struct KeyPair {
    private_pem: Vec<u8>,
    public_path: PathBuf,
    algorithm: Algorithm,
}

impl KeyPair {
    fn generate(dir: &Path, name: &str, algorithm: Algorithm) -> TestResult<KeyPair> {
        let private_path = dir.join(format!("{name}.pem"));
        let public_path = dir.join(format!("{name}.pub.pem"));
        let params: &[&str] = match algorithm {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            _ => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        };
        openssl(&[&["genpkey"], params, &["-out", path_str(&private_path)?]].concat())?;
        openssl(&[
            "pkey",
            "-in",
            path_str(&private_path)?,
            "-pubout",
            "-out",
            path_str(&public_path)?,
        ])?;
        Ok(KeyPair {
            private_pem: std::fs::read(&private_path)?,
            public_path,
            algorithm,
        })
    }

    fn sign(&self, claims: &Value) -> TestResult<String> {
        let key = match self.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private_pem)?,
            _ => EncodingKey::from_ec_pem(&self.private_pem)?,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            claims,
            &key,
        )?)
    }

    fn public_path(&self) -> TestResult<&str> {
        path_str(&self.public_path)
    }
}

fn path_str(path: &Path) -> TestResult<&str> {
    path.to_str().ok_or_else(|| "temp path is not UTF-8".into())
}

fn openssl(args: &[&str]) -> TestResult {
    let output = std::process::Command::new("openssl").args(args).output()?;
    if !output.status.success() {
        return fail(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_connects_as_its_user_in_both_encodings() -> TestResult {
    let server = TestServer::start(&hs256_config("")).await?;
    let claims = claims("alice", 600);
    let token = hs256(&claims)?;
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let (_client, reply) =
            WsClient::connect_with(&server.ws_url(), encoding, json!({ "token": token })).await?;
        assert_eq!(reply["user"], "alice");
        assert_eq!(reply["expires_at"], claims["exp"]);
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_verify_with_every_configured_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let old_rsa = KeyPair::generate(dir.path(), "old", Algorithm::RS256)?;
    let new_rsa = KeyPair::generate(dir.path(), "new", Algorithm::RS256)?;
    let ec = KeyPair::generate(dir.path(), "ec", Algorithm::ES256)?;
    let unknown = KeyPair::generate(dir.path(), "unknown", Algorithm::ES256)?;
    let config = format!(
        "[auth]\ntoken_public_keys = [\"{}\", \"{}\", \"{}\"]\n",
        old_rsa.public_path()?,
        new_rsa.public_path()?,
        ec.public_path()?
    );
    let server = TestServer::start(&config).await?;
    // Rotation: tokens signed by the old and the new key are both accepted.
    for (user, key) in [("old-rsa", &old_rsa), ("new-rsa", &new_rsa), ("ec", &ec)] {
        let token = key.sign(&claims(user, 600))?;
        let (_client, reply) =
            WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token }))
                .await?;
        assert_eq!(reply["user"], user);
    }
    // A key that is not configured, and the classic confusion: HS256 "signed" with the
    // public key's PEM as the secret.
    let foreign = unknown.sign(&claims("mallory", 600))?;
    let public_pem = std::fs::read_to_string(&new_rsa.public_path)?;
    let confused = mint_hs256(&public_pem, &claims("mallory", 600))?;
    for token in [foreign, confused] {
        let (code, disconnect) = refused(&server, json!({ "token": token })).await?;
        assert_eq!((code, disconnect["code"].clone()), (4001, json!(4001)));
    }
    let expired = ec.sign(&claims("ec", -10))?;
    assert_eq!(refused(&server, json!({ "token": expired })).await?.0, 4002);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_close_4001_and_expired_ones_4002() -> TestResult {
    let server = TestServer::start(&hs256_config("")).await?;
    let forged = mint_hs256("not-the-secret-at-all", &claims("alice", 600))?;
    let unsigned = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(claims("alice", 600).to_string());
        format!("{header}.{body}.")
    };
    let no_exp = hs256(&json!({ "sub": "alice" }))?;
    let no_sub = hs256(&json!({ "exp": unix_now() + 600 }))?;
    let subscription_token = subscription("alice", "news", 600)?;
    for token in [
        forged,
        unsigned,
        no_exp,
        no_sub,
        subscription_token,
        "garbage".to_owned(),
    ] {
        let (code, disconnect) = refused(&server, json!({ "token": token })).await?;
        assert_eq!(code, 4001, "{token}");
        assert_eq!(disconnect["op"], "disconnect");
        assert_eq!(disconnect["code"], 4001);
        assert_eq!(disconnect["reconnect"], false);
    }
    let expired = hs256(&claims("alice", -5))?;
    let (code, disconnect) = refused(&server, json!({ "token": expired })).await?;
    assert_eq!((code, disconnect["code"].clone()), (4002, json!(4002)));
    assert_eq!(disconnect["reconnect"], true);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_follow_allow_anonymous() -> TestResult {
    let open = TestServer::start(&hs256_config("allow_anonymous = true")).await?;
    let (_client, reply) = WsClient::connect(&open.ws_url(), Encoding::Json).await?;
    assert!(reply.get("user").is_none(), "{reply}");
    open.stop().await?;

    let closed = TestServer::start(&hs256_config("allow_anonymous = false")).await?;
    assert_eq!(refused(&closed, json!({})).await?.0, 4001);
    assert_eq!(refused(&closed, json!({ "token": "" })).await?.0, 4001);
    let token = hs256(&claims("alice", 600))?;
    let (_client, reply) =
        WsClient::connect_with(&closed.ws_url(), Encoding::Json, json!({ "token": token })).await?;
    assert_eq!(reply["user"], "alice");
    closed.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_may_come_in_the_authorization_header() -> TestResult {
    let server = TestServer::start(&hs256_config("allow_anonymous = false")).await?;
    let bearer = format!("Bearer {}", hs256(&claims("bob", 600))?);
    let headers = [("Authorization", bearer.as_str())];
    let mut client = WsClient::open_with(&server.ws_url(), Encoding::Json, &headers, None).await?;
    let reply = client.request("connect", json!({})).await?;
    assert_eq!(
        (reply["op"].clone(), reply["user"].clone()),
        (json!("connected"), json!("bob"))
    );
    // A token in `connect` wins over the header.
    let mut client = WsClient::open_with(&server.ws_url(), Encoding::Json, &headers, None).await?;
    let token = hs256(&claims("alice", 600))?;
    let reply = client.request("connect", json!({ "token": token })).await?;
    assert_eq!(reply["user"], "alice");
    // A bad header token is refused like a bad message token.
    let headers = [("Authorization", "Bearer not-a-token")];
    let mut client = WsClient::open_with(&server.ws_url(), Encoding::Json, &headers, None).await?;
    client.send(json!({ "op": "connect", "id": 1 })).await?;
    assert_eq!(client.expect_close().await?.0, 4001);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_claim_subscribes_at_connect() -> TestResult {
    let server = TestServer::start(&hs256_config(
        "[namespaces.feed]\nhistory_size = 10\nhistory_ttl_secs = 60\n",
    ))
    .await?;
    let mut claims = claims("alice", 600);
    claims["channels"] = json!(["news", "feed:alice", "not a channel!", "nope:x"]);
    let token = hs256(&claims)?;
    let (mut client, reply) =
        WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token })).await?;
    // Invalid names and undeclared namespaces are left out.
    assert_eq!(reply["subscribed"], json!(["news", "feed:alice"]));
    server.publish("feed:alice", json!({ "n": 1 })).await?;
    server.publish("news", json!({ "n": 2 })).await?;
    let first = client.recv_message().await?;
    assert_eq!(
        (first["channel"].clone(), first["data"].clone()),
        (json!("feed:alice"), json!({ "n": 1 }))
    );
    assert_eq!(first["offset"], 1);
    let second = client.recv_message().await?;
    assert_eq!(
        (second["channel"].clone(), second["data"].clone()),
        (json!("news"), json!({ "n": 2 }))
    );
    let again = client
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    assert_eq!(error_code(&again), Some(105));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_namespaces_need_a_subscription_token_for_this_user_and_channel() -> TestResult {
    let server = TestServer::start(&hs256_config(
        "[namespaces.private]\nallow_subscribe = \"token\"\n",
    ))
    .await?;
    let token = hs256(&claims("alice", 600))?;
    let (mut alice, _) =
        WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token })).await?;
    let room = "private:room";
    let mut ask = async |fields: Value| -> TestResult<Value> {
        let mut fields = fields;
        fields["channel"] = json!(room);
        alice.request("subscribe", fields).await
    };
    assert_eq!(
        error_code(&ask(json!({})).await?),
        Some(103),
        "missing token"
    );
    let bobs = subscription("bob", room, 600)?;
    assert_eq!(
        error_code(&ask(json!({ "token": bobs })).await?),
        Some(103),
        "other user"
    );
    let other_room = subscription("alice", "private:other", 600)?;
    assert_eq!(
        error_code(&ask(json!({ "token": other_room })).await?),
        Some(103),
        "other channel"
    );
    let expired = subscription("alice", room, -5)?;
    assert_eq!(
        error_code(&ask(json!({ "token": expired })).await?),
        Some(109),
        "expired"
    );
    assert_eq!(
        error_code(&ask(json!({ "token": "junk" })).await?),
        Some(101),
        "invalid"
    );
    let connection_token = hs256(&claims("alice", 600))?;
    assert_eq!(
        error_code(&ask(json!({ "token": connection_token })).await?),
        Some(101),
        "a connection token is not a subscription token"
    );
    let good = subscription("alice", room, 600)?;
    let reply = ask(json!({ "token": good })).await?;
    assert_eq!(
        (reply["op"].clone(), reply["channel"].clone()),
        (json!("subscribed"), json!(room))
    );
    server.publish(room, json!("secret")).await?;
    assert_eq!(alice.recv_message().await?["data"], "secret");

    // An anonymous client (user "") cannot use alice's token; a backend that wants to let
    // anonymous clients in mints one with `sub: ""`.
    let (mut anonymous, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let alices = subscription("alice", room, 600)?;
    let reply = anonymous
        .request("subscribe", json!({ "channel": room, "token": alices }))
        .await?;
    assert_eq!(error_code(&reply), Some(103));
    let anonymous_token = subscription("", room, 600)?;
    let reply = anonymous
        .request(
            "subscribe",
            json!({ "channel": room, "token": anonymous_token }),
        )
        .await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_channels_admit_only_the_listed_users() -> TestResult {
    let server = TestServer::start(&hs256_config("")).await?;
    let dm = "dm#alice,bob";
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let token = hs256(&claims(user, 600))?;
        let (client, _) =
            WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token }))
                .await?;
        clients.push((user, client));
    }
    let (anonymous, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    clients.push(("", anonymous));
    for (user, client) in &mut clients {
        let reply = client
            .request("subscribe", json!({ "channel": dm }))
            .await?;
        let expected = matches!(*user, "alice" | "bob");
        assert_eq!(reply["op"] == "subscribed", expected, "{user}: {reply}");
        if !expected {
            assert_eq!(error_code(&reply), Some(103), "{user}");
        }
    }
    server.publish(dm, json!("hi")).await?;
    for (_, client) in clients.iter_mut().take(2) {
        assert_eq!(client.recv_message().await?["data"], "hi");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_the_connection_and_the_unrefreshed_one_gets_4002() -> TestResult {
    let config = format!("[auth]\ntoken_hmac_secret = \"{SECRET}\"\nexpiry_grace_secs = 0\n");
    let server = TestServer::start(&config).await?;
    let short = |user| hs256(&claims(user, 2));
    let (mut alice, _) = WsClient::connect_with(
        &server.ws_url(),
        Encoding::Json,
        json!({ "token": short("alice")? }),
    )
    .await?;
    let (mut bob, _) = WsClient::connect_with(
        &server.ws_url(),
        Encoding::Msgpack,
        json!({ "token": short("bob")? }),
    )
    .await?;
    let fresh = claims("alice", 600);
    let reply = alice
        .request("refresh", json!({ "token": hs256(&fresh)? }))
        .await?;
    assert_eq!(
        (reply["op"].clone(), reply["expires_at"].clone()),
        (json!("refreshed"), fresh["exp"].clone())
    );
    // Refusals leave the connection and its expiry alone.
    let cases = [
        (hs256(&claims("bob", 600))?, 101),
        (hs256(&claims("alice", -5))?, 109),
        ("junk".to_owned(), 101),
        (subscription("alice", "news", 600)?, 101),
    ];
    for (token, code) in cases {
        let reply = alice.request("refresh", json!({ "token": token })).await?;
        assert_eq!(error_code(&reply), Some(code), "{reply}");
    }
    let (code, seen) = bob.expect_close().await?;
    assert_eq!(code, 4002);
    assert_eq!(seen.last().map(|m| m["code"].clone()), Some(json!(4002)));
    // Bob's token expired at least a second ago; alice's refreshed connection is still up.
    let reply = alice
        .request("subscribe", json!({ "channel": "news" }))
        .await?;
    assert_eq!(reply["op"], "subscribed");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_client_cannot_refresh_into_a_user() -> TestResult {
    let server = TestServer::start(&hs256_config("")).await?;
    let (mut client, _) = WsClient::connect(&server.ws_url(), Encoding::Json).await?;
    let reply = client
        .request("refresh", json!({ "token": hs256(&claims("alice", 600))? }))
        .await?;
    assert_eq!(error_code(&reply), Some(101));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_cli_are_accepted_by_the_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("pushwire.toml");
    let config = hs256_config("[namespaces.private]\nallow_subscribe = \"token\"\n");
    std::fs::write(&config_path, &config)?;
    let mint = async |args: &[&str]| -> TestResult<String> {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .arg("--config")
            .arg(&config_path)
            .arg("token")
            .args(args)
            .output()
            .await?;
        if !output.status.success() {
            return fail(format!(
                "pushwire token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    let token = mint(&[
        "--user",
        "alice",
        "--ttl",
        "1h",
        "--channel",
        "news",
        "--info",
        r#"{"name":"Alice"}"#,
    ])
    .await?;
    let sub_token = mint(&["--user", "alice", "--subscribe-channel", "private:room"]).await?;

    let server = TestServer::start(&config).await?;
    let (mut client, reply) =
        WsClient::connect_with(&server.ws_url(), Encoding::Json, json!({ "token": token })).await?;
    assert_eq!(reply["user"], "alice");
    assert_eq!(reply["subscribed"], json!(["news"]));
    let expires_in = reply["expires_at"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(unix_now());
    assert!(
        (3590..=3600).contains(&expires_in),
        "expires in {expires_in} s"
    );
    let reply = client
        .request(
            "subscribe",
            json!({ "channel": "private:room", "token": sub_token }),
        )
        .await?;
    assert_eq!(reply["op"], "subscribed", "{reply}");

    // Without a secret the CLI refuses and names the key.
    std::fs::write(&config_path, "")?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("--config")
        .arg(&config_path)
        .args(["token", "--user", "alice"])
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.token_hmac_secret"), "{stderr}");
    server.stop().await
}
