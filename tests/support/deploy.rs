//! Readers of the deploy files for the tests that check them (`deploy_*.rs`): the
//! Dockerfile as instructions, docker-compose.yml with its services' environments, mounts and
//! node configurations, and the Kubernetes manifests under config/k8s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml::Value as Yaml;

use pushwire::config::Config;

use super::observability::{
    check_config, read_repo_file, read_yaml, read_yaml_documents, repo_path,
};
use super::{TestResult, fail};

// ---- Dockerfile -------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined, with the build stage it is in.
#[derive(Debug)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    pub stage: usize,
}

pub fn dockerfile() -> TestResult<Vec<Instruction>> {
    let text = read_repo_file("Dockerfile")?;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut stage = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                let keyword = keyword.to_ascii_uppercase();
                if keyword == "FROM" {
                    stage += 1;
                }
                out.push(Instruction {
                    keyword,
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                    stage,
                });
                current.clear();
            }
        }
    }
    Ok(out)
}

pub fn position(
    instructions: &[Instruction],
    pred: impl Fn(&Instruction) -> bool,
) -> Option<usize> {
    instructions.iter().position(pred)
}

/// The uid the final stage runs as.
pub fn image_uid(instructions: &[Instruction], last: usize) -> TestResult<u32> {
    let user = instructions
        .iter()
        .rfind(|i| i.keyword == "USER" && i.stage == last)
        .ok_or("the final stage sets no USER")?;
    let uid = user.args.split(':').next().unwrap_or_default();
    let uid: u32 = uid.parse().map_err(|_| {
        format!("USER {uid}: use a numeric uid so Kubernetes can verify runAsNonRoot")
    })?;
    if uid == 0 {
        return fail("the image runs as root");
    }
    Ok(uid)
}

// ---- docker-compose.yml -----------------------------------------------------------------

/// `${NAME:-default}` -> default, `${NAME}` -> "", `$$` -> `$`, like compose without a .env.
pub fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        rest = &rest[start + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').unwrap_or(body.len());
            if let Some((_, default)) = body[..end].split_once(":-") {
                out.push_str(default);
            }
            rest = body.get(end + 1..).unwrap_or("");
        } else {
            out.push('$');
        }
    }
    out.push_str(rest);
    out
}

pub fn yaml_string(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A service's environment (map or `KEY=value` list), interpolated.
pub fn compose_env(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Mapping(map) => map
            .iter()
            .map(|(k, v)| (yaml_string(k), interpolate(&yaml_string(v))))
            .collect(),
        Yaml::Sequence(items) => items
            .iter()
            .filter_map(|i| {
                i.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), interpolate(v)))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `(host path relative to the repo, container path)` of a service's bind mounts.
pub fn compose_mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            source.starts_with("./").then(|| {
                (
                    source.trim_start_matches("./").to_owned(),
                    target.to_owned(),
                )
            })
        })
        .collect()
}

/// The repository file a container path comes from, through a service's bind mounts.
pub fn host_path_of(service: &Yaml, container_path: &str) -> Option<String> {
    compose_mounts(service)
        .into_iter()
        .find_map(|(source, target)| {
            let rest = container_path.strip_prefix(&target)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{source}{rest}"))
        })
}

/// "30s", "1m30s", "2m" -> seconds.
pub fn duration_secs(text: &str) -> TestResult<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number.parse().map_err(|_| format!("bad duration {text}"))?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => return fail(format!("bad duration {text}")),
        }
    }
    if !number.is_empty() {
        return fail(format!("duration {text} needs a unit"));
    }
    Ok(total)
}

/// Loads a compose node's configuration the way its container does.
pub fn compose_node_config(service: &Yaml) -> TestResult<Config> {
    let mut env = compose_env(service);
    if let Some(path) = env.get("PUSHWIRE_CONFIG").cloned() {
        let host = host_path_of(service, &path)
            .ok_or_else(|| format!("PUSHWIRE_CONFIG={path} is not mounted"))?;
        env.insert(
            "PUSHWIRE_CONFIG".into(),
            repo_path(&host).display().to_string(),
        );
    }
    check_config(&env)
}

/// Container ports published or exposed by a service.
pub fn compose_container_ports(service: &Yaml) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for key in ["ports", "expose"] {
        for port in service[key].as_sequence().into_iter().flatten() {
            let text = yaml_string(port);
            if let Some(p) = text.rsplit(':').next().and_then(|p| p.parse().ok()) {
                out.insert(p);
            }
        }
    }
    out
}

pub struct Compose {
    pub services: serde_yaml::Mapping,
    pub nodes: BTreeMap<String, (Yaml, Config)>,
}

pub fn compose() -> TestResult<Compose> {
    let file = read_yaml("docker-compose.yml")?;
    let services = file["services"].as_mapping().ok_or("no services")?.clone();
    let mut nodes = BTreeMap::new();
    for (name, service) in &services {
        if compose_env(service).contains_key("PUSHWIRE_BROKER__KIND") {
            let config = compose_node_config(service)?;
            nodes.insert(yaml_string(name), (service.clone(), config));
        }
    }
    Ok(Compose { services, nodes })
}

impl Compose {
    pub fn service(&self, name: &str) -> TestResult<&Yaml> {
        self.services
            .get(name)
            .ok_or_else(|| format!("docker-compose.yml has no service {name}").into())
    }
}

// ---- Kubernetes -------------------------------------------------------------------------

pub struct Kube {
    pub deployment: Yaml,
    pub container: Yaml,
    pub config_maps: BTreeMap<String, Yaml>,
    pub others: Vec<Yaml>,
}

pub fn kube() -> TestResult<Kube> {
    let mut documents = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("config/k8s"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let relative = file
            .strip_prefix(repo_path(""))?
            .to_string_lossy()
            .into_owned();
        documents.extend(read_yaml_documents(&relative)?);
    }
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .cloned()
        .ok_or("no Deployment")?;
    let container = deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let config_maps = documents
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| (yaml_string(&d["metadata"]["name"]), d.clone()))
        .collect();
    Ok(Kube {
        deployment,
        container,
        config_maps,
        others: documents,
    })
}

impl Kube {
    /// The container's environment as the kubelet builds it; secrets become placeholders.
    pub fn env(&self, dir: &std::path::Path) -> TestResult<BTreeMap<String, String>> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for var in self.container["env"].as_sequence().into_iter().flatten() {
            let name = yaml_string(&var["name"]);
            let value = if let Some(value) = var["value"].as_str() {
                let mut value = value.to_owned();
                for (k, v) in &env {
                    value = value.replace(&format!("$({k})"), v);
                }
                value
            } else if var["valueFrom"]["secretKeyRef"].is_mapping() {
                // All digits: the deploy files must keep such a secret a string.
                "8".repeat(32)
            } else if var["valueFrom"]["fieldRef"].is_mapping() {
                "pushwire-7d9f8-abcde".to_owned()
            } else {
                return fail(format!("env {name}: unsupported source"));
            };
            env.insert(name, value);
        }
        if let Some(path) = env.get("PUSHWIRE_CONFIG").cloned() {
            let file = self.mounted_config_file(&path)?;
            let local = dir.join("pushwire.toml");
            std::fs::write(&local, file)?;
            env.insert("PUSHWIRE_CONFIG".into(), local.display().to_string());
        }
        Ok(env)
    }

    /// The content of a file the container sees at `path` through a ConfigMap volume.
    pub fn mounted_config_file(&self, path: &str) -> TestResult<String> {
        for mount in self.container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let mount_path = yaml_string(&mount["mountPath"]);
            let Some(file) = path.strip_prefix(&format!("{mount_path}/")) else {
                continue;
            };
            let volume = self.deployment["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == mount["name"])
                .ok_or("volume of the mount")?;
            let map_name = yaml_string(&volume["configMap"]["name"]);
            let map = self
                .config_maps
                .get(&map_name)
                .ok_or_else(|| format!("no ConfigMap {map_name}"))?;
            return map["data"][file]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("ConfigMap {map_name} has no {file}").into());
        }
        fail(format!("{path} is not mounted"))
    }

    pub fn pod_labels(&self) -> &Yaml {
        &self.deployment["spec"]["template"]["metadata"]["labels"]
    }

    pub fn container_port(&self, name: &str) -> TestResult<u16> {
        self.container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("no container port named {name}").into())
    }

    /// A port reference (a name or a number) resolved to a number.
    pub fn resolve_port(&self, port: &Yaml) -> TestResult<u16> {
        match port {
            Yaml::String(name) => self.container_port(name),
            Yaml::Number(n) => Ok(n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or("bad port")?),
            _ => fail("missing port"),
        }
    }
}

/// `labels` holds every key/value of `selector`.
pub fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_mapping()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
