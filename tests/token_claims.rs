//! Registered JWT claims with tokens minted by independent libraries (PyJWT, and the
//! `jsonwebtoken` npm package), as an identity provider would mint them: `aud` is ignored
//! unless `auth.token_audience` is set, then it must match; `iss` likewise with
//! `auth.token_issuer`; a token before its `nbf` is refused (4001). HS256, RS256 and ES256.

mod support;

use std::path::{Path, PathBuf};

use pushwire::auth::unix_now;
use serde_json::{Value, json};
use support::external::{node, python, run};
use support::{Encoding, TestResult, TestServer, WsClient, fail};

const SECRET: &str = "token-claims-test-secret-0123456789abcdef";
const AUDIENCE: &str = "https://push.example.com";
const ISSUER: &str = "https://idp.example.com/";

/// The library that signs a token.
#[derive(Debug, Clone, Copy)]
enum Minter {
    PyJwt,
    NodeJsonwebtoken,
}

/// The signing keys of one test: the HMAC secret and an RSA and an EC key pair (openssl).
struct Keys {
    _dir: tempfile::TempDir,
    secret: PathBuf,
    rsa: PathBuf,
    rsa_public: PathBuf,
    ec: PathBuf,
    ec_public: PathBuf,
}

impl Keys {
    fn generate() -> TestResult<Keys> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET)?;
        let (rsa, rsa_public) = key_pair(dir.path(), "rsa", &["-algorithm", "RSA"])?;
        let (ec, ec_public) = key_pair(
            dir.path(),
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )?;
        Ok(Keys {
            _dir: dir,
            secret,
            rsa,
            rsa_public,
            ec,
            ec_public,
        })
    }

    /// The server configuration that trusts these keys, plus `extra` under `[auth]`.
    fn config(&self, extra: &str) -> TestResult<String> {
        Ok(format!(
            "allow_anonymous = false\n[auth]\ntoken_hmac_secret = \"{SECRET}\"\n\
             token_public_keys = [\"{}\", \"{}\"]\n{extra}\n",
            path_str(&self.rsa_public)?,
            path_str(&self.ec_public)?
        ))
    }

    fn private_key(&self, alg: &str) -> &Path {
        match alg {
            "RS256" => &self.rsa,
            "ES256" => &self.ec,
            _ => &self.secret,
        }
    }

    /// Signs `claims` with `minter` (never with pushwire's own code).
    async fn mint(&self, minter: Minter, alg: &str, claims: &Value) -> TestResult<String> {
        let key = path_str(self.private_key(alg))?;
        let claims = claims.to_string();
        let args = [alg, key, claims.as_str()];
        let command = match minter {
            Minter::PyJwt => python("mint_jwt.py", &args)?,
            Minter::NodeJsonwebtoken => node("mint_jwt.mjs", &args)?,
        };
        Ok(run(command).await?.trim().to_owned())
    }
}

fn key_pair(dir: &Path, name: &str, params: &[&str]) -> TestResult<(PathBuf, PathBuf)> {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    openssl(&[&["genpkey"], params, &["-out", path_str(&private)?]].concat())?;
    openssl(&[
        "pkey",
        "-in",
        path_str(&private)?,
        "-pubout",
        "-out",
        path_str(&public)?,
    ])?;
    Ok((private, public))
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

/// Claims for `alice`, valid for ten minutes, with `extra` added.
fn claims(extra: Value) -> Value {
    let mut claims = json!({ "sub": "alice", "exp": unix_now() + 600 });
    if let (Some(into), Some(from)) = (claims.as_object_mut(), extra.as_object()) {
        into.extend(from.clone());
    }
    claims
}

/// Connects with `token`: `Ok(user)` when connected, `Err(close code)` when refused.
async fn connect(server: &TestServer, token: &str) -> TestResult<Result<String, u64>> {
    let mut client = WsClient::open(&server.ws_url(), Encoding::Json).await?;
    client
        .send(json!({ "op": "connect", "id": 1, "token": token }))
        .await?;
    let reply = client.recv().await?;
    match reply["op"].as_str() {
        Some("connected") => Ok(Ok(reply["user"].as_str().unwrap_or_default().to_owned())),
        Some("disconnect") => Ok(Err(reply["code"].as_u64().unwrap_or(0))),
        _ => fail(format!("unexpected reply to connect: {reply}")),
    }
}

/// Mints `claims` with every library and algorithm and checks each connect's outcome.
async fn expect_everywhere(
    server: &TestServer,
    keys: &Keys,
    claims: &Value,
    expected: Result<&str, u64>,
) -> TestResult {
    for minter in [Minter::PyJwt, Minter::NodeJsonwebtoken] {
        for alg in ["HS256", "RS256", "ES256"] {
            let token = keys.mint(minter, alg, claims).await?;
            let got = connect(server, &token).await?;
            assert_eq!(
                got.as_deref().map_err(|code| *code),
                expected,
                "{minter:?} {alg} token with {claims}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud_and_iss_are_ignored_unless_configured() -> TestResult {
    let keys = Keys::generate()?;
    let server = TestServer::start(&keys.config("")?).await?;
    for extra in [
        json!({ "aud": "some-other-api" }),
        json!({ "aud": ["a", "b"], "iss": "https://anyone.example/" }),
        json!({}),
    ] {
        expect_everywhere(&server, &keys, &claims(extra), Ok("alice")).await?;
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_audience_and_issuer_must_match() -> TestResult {
    let keys = Keys::generate()?;
    let config = keys.config(&format!(
        "token_audience = \"{AUDIENCE}\"\ntoken_issuer = \"{ISSUER}\""
    ))?;
    let server = TestServer::start(&config).await?;
    let good = [
        json!({ "aud": AUDIENCE, "iss": ISSUER }),
        json!({ "aud": ["https://other.example", AUDIENCE], "iss": ISSUER }),
    ];
    for extra in good {
        expect_everywhere(&server, &keys, &claims(extra), Ok("alice")).await?;
    }
    let bad = [
        json!({ "aud": "https://other.example", "iss": ISSUER }),
        json!({ "iss": ISSUER }),
        json!({ "aud": AUDIENCE, "iss": "https://evil.example/" }),
        json!({ "aud": AUDIENCE }),
    ];
    for extra in bad {
        expect_everywhere(&server, &keys, &claims(extra), Err(4001)).await?;
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_before_its_nbf() -> TestResult {
    let keys = Keys::generate()?;
    let server = TestServer::start(&keys.config("")?).await?;
    let now = unix_now();
    let early = claims(json!({ "nbf": now + 300, "iat": now }));
    expect_everywhere(&server, &keys, &early, Err(4001)).await?;
    let started = claims(json!({ "nbf": now - 5, "iat": now - 5 }));
    expect_everywhere(&server, &keys, &started, Ok("alice")).await?;
    // An expired token is still told apart (4002), with or without other claims.
    let expired = json!({ "sub": "alice", "exp": now - 5, "aud": "x", "nbf": now - 60 });
    expect_everywhere(&server, &keys, &expired, Err(4002)).await?;
    server.stop().await
}
