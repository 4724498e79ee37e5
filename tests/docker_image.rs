//! The container image's configuration, without a Docker engine: the config file the image
//! ships passes `pushwire check-config`; the runtime environment the Dockerfile sets does not
//! override a mounted config file; and the HEALTHCHECK command finds the server on whatever
//! port the configuration chose.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use pushwire::config::{Config, LogFormat};
use support::observability::{read_repo_file, repo_path};
use support::{BinaryServer, TestResult, fail};

/// Where the image reads its configuration when nothing says otherwise.
const IMAGE_CONFIG_PATH: &str = "/etc/pushwire/pushwire.toml";

/// The final stage of the Dockerfile: its `ENV` pairs and its `COPY src dest` (not from
/// another stage), continuation lines joined.
struct RuntimeStage {
    env: BTreeMap<String, String>,
    copies: Vec<(String, String)>,
}

fn runtime_stage() -> TestResult<RuntimeStage> {
    let text = read_repo_file("Dockerfile")?.replace("\\\n", " ");
    let stage = text
        .rsplit("\nFROM ")
        .next()
        .ok_or("no FROM in the Dockerfile")?;
    let mut env = BTreeMap::new();
    let mut copies = Vec::new();
    for line in stage.lines().map(str::trim) {
        if let Some(pairs) = line.strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("ENV without `=`: {line}"))?;
                env.insert(key.to_owned(), value.trim_matches('"').to_owned());
            }
        }
        if let Some(args) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = args.split_whitespace().collect();
            if let [from, to] = words.as_slice() {
                copies.push(((*from).to_owned(), (*to).to_owned()));
            }
        }
    }
    Ok(RuntimeStage { env, copies })
}

/// Runs the binary with exactly `env` (as a container would), from the repository root.
fn pushwire(args: &[&str], env: &BTreeMap<String, String>) -> TestResult<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(repo_path(""))
        .output()?)
}

fn check_config(env: &BTreeMap<String, String>) -> TestResult<Config> {
    let output = pushwire(&["check-config"], env)?;
    if !output.status.success() {
        return fail(format!(
            "check-config failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(toml::from_str(&String::from_utf8(output.stdout)?)?)
}

/// The image's environment with its config file "mounted" from `host_file`.
fn with_mounted_config(stage: &RuntimeStage, host_file: &str) -> BTreeMap<String, String> {
    let mut env = stage.env.clone();
    env.insert("PUSHWIRE_CONFIG".into(), host_file.to_owned());
    env
}

#[test]
fn the_shipped_docker_config_passes_check_config() -> TestResult {
    let stage = runtime_stage()?;
    let in_image = stage
        .env
        .get("PUSHWIRE_CONFIG")
        .map_or(IMAGE_CONFIG_PATH, String::as_str);
    let (shipped, _) = stage
        .copies
        .iter()
        .find(|(_, to)| to == in_image)
        .ok_or_else(|| format!("the image ships no config file at {in_image}"))?;
    assert_eq!(shipped, "config/docker.toml");
    let path = repo_path(shipped).display().to_string();
    let config = check_config(&with_mounted_config(&stage, &path))?;
    assert_eq!(config.server.listen, "0.0.0.0:8080");
    assert_eq!(config.log.format, LogFormat::Json);
    let exposed = read_repo_file("Dockerfile")?
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .map(|p| p.trim().to_owned());
    assert_eq!(
        exposed.as_deref(),
        Some("8080"),
        "EXPOSE matches server.listen"
    );
    Ok(())
}

#[test]
fn the_image_environment_does_not_override_a_mounted_config() -> TestResult {
    let stage = runtime_stage()?;
    let mounted = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        mounted.path(),
        "[server]\nlisten = \"0.0.0.0:9123\"\n[log]\nformat = \"text\"\nlevel = \"debug\"\n",
    )?;
    let env = with_mounted_config(&stage, &mounted.path().display().to_string());
    let config = check_config(&env)?;
    assert_eq!(
        (
            config.server.listen.as_str(),
            config.log.format,
            config.log.level.as_str()
        ),
        ("0.0.0.0:9123", LogFormat::Text, "debug"),
        "the Dockerfile's ENV ({:?}) overrides the mounted file",
        stage.env
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_asks_the_configured_port() -> TestResult {
    let server = BinaryServer::start("").await?;
    let env = BTreeMap::new();
    let listen = server.addr.to_string();
    let output = pushwire(&["healthcheck", "--listen", &listen], &env)?;
    assert!(
        output.status.success(),
        "healthcheck against {listen}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A wildcard listen address is asked on loopback, as inside a container.
    let wildcard = format!("0.0.0.0:{}", server.addr.port());
    assert!(
        pushwire(&["healthcheck", "--listen", &wildcard], &env)?
            .status
            .success()
    );
    server.terminate()?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let output = pushwire(&["healthcheck", "--listen", &closed.to_string()], &env)?;
    assert!(!output.status.success(), "nothing listens on {closed}");
    Ok(())
}
