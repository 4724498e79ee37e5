//! The Dockerfile agrees with the workspace and with how the image is run: dependencies
//! cached before the real sources, every workspace target copied, a small non-root runtime
//! with a health check, and a .dockerignore that keeps the build context small but complete.
//! No Docker engine runs here; the file is parsed (see `support::deploy`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::TestResult;
use support::deploy::{Instruction, dockerfile, image_uid, position};
use support::observability::{check_config, port_of, read_repo_file, repo_path};

/// `KEY=value` pairs of every ENV instruction of the final stage.
fn dockerfile_env(instructions: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "ENV" && i.stage == stage)
        .flat_map(|i| i.args.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Source paths each workspace member needs to compile (explicit targets and defaults).
fn workspace_targets() -> TestResult<Vec<String>> {
    let root: toml::Table = read_repo_file("Cargo.toml")?.parse()?;
    let members = root["workspace"]["members"]
        .as_array()
        .ok_or("no workspace members")?;
    let mut out = Vec::new();
    for member in members {
        let member = member.as_str().ok_or("member is not a string")?;
        let dir = if member == "." {
            String::new()
        } else {
            format!("{member}/")
        };
        let manifest: toml::Table = read_repo_file(&format!("{dir}Cargo.toml"))?.parse()?;
        for kind in ["bin", "bench", "example", "test"] {
            for target in manifest
                .get(kind)
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                    out.push(format!("{dir}{path}"));
                }
            }
        }
        for default in ["src/main.rs", "src/lib.rs"] {
            if repo_path(&format!("{dir}{default}")).exists() {
                out.push(format!("{dir}{default}"));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[test]
fn dockerfile_caches_dependencies_then_builds_the_real_sources() -> TestResult {
    let ins = dockerfile()?;
    let froms: Vec<&Instruction> = ins.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    assert!(
        froms[0].args.starts_with("rust:") && froms[0].args.to_lowercase().ends_with(" as builder"),
        "builder stage: {}",
        froms[0].args
    );
    let builder = froms[0].stage;
    let cargo_build = |i: &Instruction| {
        i.stage == builder && i.keyword == "RUN" && i.args.contains("cargo build")
    };
    let first_build = position(&ins, cargo_build).ok_or("no cargo build")?;
    let last_build = ins.iter().rposition(cargo_build).ok_or("no cargo build")?;
    assert!(
        first_build < last_build,
        "a dependency build, then the real one"
    );
    for build in [&ins[first_build], &ins[last_build]] {
        assert!(
            build.args.contains("--locked"),
            "builds use Cargo.lock: {}",
            build.args
        );
        assert!(
            build.args.contains("--release"),
            "release builds: {}",
            build.args
        );
    }
    let copied_before = |needle: &str, before: usize| {
        ins[..before]
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.split_whitespace().any(|a| a == needle))
    };
    // Manifests of every member and the lock file before the dependency build.
    let root: toml::Table = read_repo_file("Cargo.toml")?.parse()?;
    for member in root["workspace"]["members"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let member = member.as_str().unwrap_or_default();
        let manifest = if member == "." {
            "Cargo.toml".to_owned()
        } else {
            format!("{member}/Cargo.toml")
        };
        assert!(
            copied_before(&manifest, first_build),
            "{manifest} copied before the dependency build"
        );
        let sources = if member == "." {
            "src".to_owned()
        } else {
            format!("{member}/src")
        };
        assert!(
            !copied_before(&sources, first_build) && copied_before(&sources, last_build),
            "{sources} copied after the dependency build and before the real one"
        );
    }
    assert!(
        copied_before("Cargo.lock", first_build),
        "Cargo.lock copied first"
    );
    // Every source file a manifest names must exist as a stub for the dependency build.
    for target in workspace_targets()? {
        assert!(
            ins[first_build].args.contains(&target),
            "the dependency build must stub {target} (a target in a workspace manifest)"
        );
    }
    // The stubs' build products must not pass for the real ones.
    assert!(
        ins[last_build].args.contains("touch")
            || ins[first_build].args.contains(".fingerprint/pushwire"),
        "the real build must invalidate the stub build (touch or remove fingerprints)"
    );
    Ok(())
}

#[test]
fn dockerfile_runtime_is_small_non_root_and_healthchecked() -> TestResult {
    let ins = dockerfile()?;
    let last = ins.iter().map(|i| i.stage).max().unwrap_or(0);
    let runtime = ins
        .iter()
        .find(|i| i.keyword == "FROM" && i.stage == last)
        .ok_or("no FROM")?;
    assert!(
        runtime.args.starts_with("debian:bookworm-slim")
            || runtime.args.starts_with("gcr.io/distroless/cc"),
        "small runtime image: {}",
        runtime.args
    );
    let uid = image_uid(&ins, last)?;
    let final_runs: String = ins
        .iter()
        .filter(|i| i.stage == last && i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        final_runs.contains(&format!("--uid {uid}")),
        "a user with uid {uid} is created"
    );
    assert!(
        final_runs.contains("ca-certificates"),
        "ca-certificates for rediss://"
    );
    let single = |keyword: &str| -> TestResult<&str> {
        ins.iter()
            .rfind(|i| i.stage == last && i.keyword == keyword)
            .map(|i| i.args.as_str())
            .ok_or_else(|| format!("the final stage has no {keyword}").into())
    };
    assert_eq!(single("ENTRYPOINT")?, r#"["pushwire"]"#);
    assert_eq!(single("CMD")?, r#"["serve"]"#);
    assert!(
        ins.iter().any(|i| i.stage == last
            && i.keyword == "COPY"
            && i.args.starts_with("--from=builder")
            && i.args.ends_with("/usr/local/bin/pushwire")),
        "the binary is copied onto PATH"
    );
    let exposed: u16 = single("EXPOSE")?.trim_end_matches("/tcp").parse()?;

    // The configuration the image starts with: the ENV of the final stage, nothing else,
    // and the config file the image ships where PUSHWIRE_CONFIG points.
    let mut env = dockerfile_env(&ins, last);
    if let Some(path) = env.get_mut("PUSHWIRE_CONFIG") {
        let shipped = ins
            .iter()
            .filter(|i| i.stage == last && i.keyword == "COPY" && !i.args.starts_with("--from"))
            .find_map(|i| i.args.strip_suffix(&format!(" {path}")))
            .ok_or_else(|| format!("the image ships no file at PUSHWIRE_CONFIG={path}"))?;
        *path = repo_path(shipped).display().to_string();
    }
    let config = check_config(&env)?;
    assert_eq!(
        config.listen_addr().port(),
        exposed,
        "EXPOSE matches server.listen"
    );

    // HEALTHCHECK: exec form, a tool the image installs, /health on the listen port.
    let healthcheck = single("HEALTHCHECK")?;
    let exec = healthcheck
        .split_once("CMD ")
        .map(|(_, cmd)| cmd)
        .ok_or("HEALTHCHECK without CMD")?;
    let argv: Vec<String> = serde_json::from_str(exec)
        .map_err(|_| format!("HEALTHCHECK CMD must be the exec form: {exec}"))?;
    let tool = argv.first().ok_or("empty HEALTHCHECK")?;
    if tool == "pushwire" {
        // It finds the port in the configuration (tests/docker_image.rs runs it).
        assert_eq!(argv, ["pushwire", "healthcheck"]);
        return Ok(());
    }
    assert!(
        final_runs.split_whitespace().any(|w| w == tool),
        "the image installs the HEALTHCHECK tool {tool}"
    );
    let url = argv
        .iter()
        .find(|a| a.starts_with("http://"))
        .ok_or("HEALTHCHECK without URL")?;
    let rest = url.trim_start_matches("http://");
    let (host_port, path) = rest.split_once('/').ok_or("URL without path")?;
    assert_eq!(format!("/{path}"), "/health");
    assert_eq!(port_of(host_port)?, exposed, "HEALTHCHECK port");
    Ok(())
}

#[test]
fn dockerignore_keeps_the_build_context_small_but_complete() -> TestResult {
    let ignored: BTreeSet<String> = read_repo_file(".dockerignore")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("/").to_owned())
        .collect();
    assert!(ignored.contains("target"), "target/ is excluded");
    for needed in ["src", "Cargo.toml", "Cargo.lock", "loadtest", "config"] {
        assert!(!ignored.contains(needed), "{needed} is needed by the build");
    }
    Ok(())
}
