//! The `pushwire` command line: `serve` (the default), `check-config`, `healthcheck` (for
//! a container's HEALTHCHECK), and `token` (mint a JWT for local development). Nothing else
//! lives here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use pushwire::auth::{ConnectClaims, SubscribeClaims, mint_hs256, unix_now};
use pushwire::config::{Config, Overrides};
use pushwire::server::Server;

#[derive(Parser)]
#[command(
    name = "pushwire",
    version,
    about = "A real-time WebSocket push server"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct Common {
    /// TOML config file (defaults are embedded; every key is optional).
    #[arg(long, short, global = true, env = "PUSHWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen (e.g. 127.0.0.1:0 for a free port).
    #[arg(long, global = true)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Load and validate the configuration, print it, and exit.
    CheckConfig,
    /// Ask the local server's /health on its server.listen port; exit 0 when it answers 200.
    Healthcheck,
    /// Mint an HS256 token from auth.token_hmac_secret, for development.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    user: String,
    /// Lifetime, e.g. 1h, 30m, 90s.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Channels to subscribe server-side at connect (`channels` claim); repeatable.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Mint a subscription token for this channel instead of a connection token.
    #[arg(long)]
    subscribe_channel: Option<String>,
    /// JSON shown in presence (`info` claim).
    #[arg(long)]
    info: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.common.listen.clone(),
    };
    let config =
        Config::load(cli.common.config.as_deref(), &overrides).context("loading configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, cli.common, overrides),
        Command::CheckConfig => {
            // The public key files are part of the configuration: load them too.
            pushwire::auth::TokenVerifier::from_config(&config.auth)
                .context("loading auth.token_public_keys")?;
            println!(
                "{}",
                toml::to_string_pretty(&redacted(config)).context("printing configuration")?
            );
            Ok(())
        }
        Command::Healthcheck => healthcheck(&config),
        Command::Token(args) => {
            println!("{}", mint(&config, &args)?);
            Ok(())
        }
    }
}

fn serve(config: Config, common: Common, overrides: Overrides) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.threads())
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The trace exporter's batch processor runs on the runtime: build it inside.
    let traces = if config.tracing.enabled {
        let _inside = runtime.enter();
        let provider = pushwire::telemetry::otlp_provider(&config.tracing, &config.node_name)
            .context("starting the trace exporter ([tracing])")?;
        Some(provider)
    } else {
        None
    };
    pushwire::logging::init(
        &config.log,
        traces.as_ref().map(|provider| {
            Box::new(pushwire::telemetry::layer(provider, &config.tracing))
                as pushwire::logging::ExtraLayer
        }),
    );
    let served = runtime.block_on(async move {
        let server = Server::bind(config).await.context("starting the server")?;
        if let Some(key) = &server.generated_api_key {
            tracing::warn!(api_key = %key, "no api.keys configured; generated an API key for this run");
        }
        let state = server.state();
        if pushwire::session::origins_open(&state.config().client) {
            tracing::warn!("client.allowed_origins is open: WebSocket upgrades from any web origin are accepted (cross-site WebSocket hijacking); list your origins");
        }
        let signal = shutdown_signal();
        tracing::info!(addr = %server.local_addr(), node = %state.node.name, broker = state.broker.kind(), "listening");
        println!("pushwire listening on {}", server.local_addr());
        reload_on_sighup(state, common.config, overrides);
        server.run(signal).await.context("serving")?;
        tracing::info!("stopped");
        Ok(())
    });
    if let Some(provider) = traces {
        // Exports what is still batched; a collector that is gone only costs a warning.
        let _inside = runtime.enter();
        if let Err(err) = provider.shutdown() {
            tracing::warn!(error = %err, "trace exporter did not flush");
        }
    }
    served
}

/// SIGINT or SIGTERM. The handlers are installed by this call, not on the first poll: the
/// node announces itself before `Server::run` polls the future, and a signal sent in
/// between must already mean a graceful shutdown.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads limits and namespaces from the same sources on SIGHUP.
fn reload_on_sighup(
    state: std::sync::Arc<pushwire::state::AppState>,
    path: Option<PathBuf>,
    overrides: Overrides,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(path.as_deref(), &overrides) {
                Ok(next) => {
                    let ignored = state.reload(next);
                    tracing::info!("configuration reloaded (limits and namespaces)");
                    if !ignored.is_empty() {
                        tracing::warn!(sections = ?ignored, "these changes need a restart and were not applied");
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "configuration reload failed; keeping the old one")
                }
            }
        }
    });
}

/// `GET /health` on this machine's server.listen port (a wildcard address becomes loopback).
fn healthcheck(config: &Config) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut addr = config.listen_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).context("reading the answer")?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    anyhow::ensure!(
        status_line.starts_with("HTTP/1.1 200"),
        "/health on {addr} answered {:?}",
        status_line.lines().next().unwrap_or_default()
    );
    println!("ok: /health on {addr}");
    Ok(())
}

/// Shown instead of a secret by `check-config`, whose output ends up in CI logs.
const REDACTED: &str = "<redacted>";

/// The configuration with its secrets (token and webhook secrets, API keys, Redis
/// passwords, Pusher app secrets, the backend proxy's static headers) replaced.
fn redacted(mut config: Config) -> Config {
    config.pusher.redact_secrets(REDACTED);
    if !config.auth.token_hmac_secret.is_empty() {
        config.auth.token_hmac_secret = REDACTED.into();
    }
    for key in &mut config.api.keys {
        *key = REDACTED.into();
    }
    for value in config.proxy.static_headers.values_mut() {
        *value = REDACTED.into();
    }
    if !config.webhooks.secret.is_empty() {
        config.webhooks.secret = REDACTED.into();
    }
    config.redis.url = redact_url_password(&config.redis.url);
    for node in &mut config.redis.cluster_nodes {
        *node = redact_url_password(node);
    }
    config
}

/// `redis://user:secret@host` becomes `redis://user:<redacted>@host`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
    format!("{scheme}://{user}:{REDACTED}@{host}")
}

fn mint(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let secret = &config.auth.token_hmac_secret;
    anyhow::ensure!(
        !secret.is_empty(),
        "auth.token_hmac_secret is not set; tokens cannot be minted"
    );
    let exp = unix_now() + args.ttl.as_secs();
    let token = match &args.subscribe_channel {
        Some(channel) => mint_hs256(
            secret,
            &SubscribeClaims {
                sub: args.user.clone(),
                channel: channel.clone(),
                exp,
            },
        )?,
        None => {
            let info = match &args.info {
                Some(text) => Some(serde_json::from_str(text).context("--info is not valid JSON")?),
                None => None,
            };
            let channels = (!args.channels.is_empty()).then(|| args.channels.clone());
            mint_hs256(
                secret,
                &ConnectClaims {
                    sub: args.user.clone(),
                    exp,
                    info,
                    channels,
                },
            )?
        }
    };
    Ok(token)
}
