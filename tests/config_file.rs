//! The documented configuration stays complete: `config/pushwire.toml` loads, validates,
//! holds exactly the embedded defaults, and has every key `Config` serialises, each with a
//! comment, in struct order; `docs/configuration.md` names every key. A new config key that
//! nobody documented fails here.

use std::path::Path;

use pushwire::config::{Config, DEFAULT_NAMESPACE};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const EXAMPLE: &str = "config/pushwire.toml";
const REFERENCE: &str = "docs/configuration.md";

fn read(relative: &str) -> TestResult<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Every leaf key of `table` as a dotted path (an empty table counts as a leaf, so it
/// must be documented too).
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => leaf_keys(inner, &path, out),
            _ => out.push(path),
        }
    }
}

/// Every key of the embedded defaults, found by walking the nested tables.
fn default_keys() -> TestResult<Vec<String>> {
    let table: toml::Table = toml::to_string(&Config::default())?.parse()?;
    let mut keys = Vec::new();
    leaf_keys(&table, "", &mut keys);
    Ok(keys)
}

/// The same keys in the order serde writes them, which is struct order (a parsed
/// `toml::Table` is sorted, so the order comes from the serialised text).
fn default_keys_in_struct_order() -> TestResult<Vec<String>> {
    let text = toml::to_string(&Config::default())?;
    let ordered: Vec<String> = assignments(&text).into_iter().map(|a| a.path).collect();
    let mut sorted = ordered.clone();
    sorted.sort();
    let mut walked = default_keys()?;
    walked.sort();
    assert_eq!(sorted, walked, "the line scanner must see every key");
    Ok(ordered)
}

/// A key assignment found in the example file.
struct Assignment {
    path: String,
    /// A `#` comment on the line above, or at the end of the line.
    commented: bool,
}

/// Reads the example line by line: `[section]` headers and `key = value` lines (all our
/// values fit on one line). Commented-out lines are skipped.
fn assignments(text: &str) -> Vec<Assignment> {
    let mut section = String::new();
    let mut previous_is_comment = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.trim().to_owned();
        } else if let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let key = key.trim();
            out.push(Assignment {
                path: if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                },
                commented: previous_is_comment || value.contains(" # "),
            });
        }
        previous_is_comment = line.starts_with('#');
    }
    out
}

#[test]
fn example_loads_and_validates() -> TestResult {
    Config::from_toml(&read(EXAMPLE)?)?;
    Ok(())
}

#[test]
fn example_holds_the_embedded_defaults() -> TestResult {
    let example = toml::Value::try_from(Config::from_toml(&read(EXAMPLE)?)?)?;
    let defaults = toml::Value::try_from(Config::default())?;
    assert_eq!(
        toml::to_string(&example)?,
        toml::to_string(&defaults)?,
        "{EXAMPLE} must show every key at its default value (left: file, right: defaults)"
    );
    Ok(())
}

#[test]
fn example_documents_every_key_in_struct_order() -> TestResult {
    let expected = default_keys_in_struct_order()?;
    let found = assignments(&read(EXAMPLE)?);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|key| !found.iter().any(|a| &a.path == *key))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from {EXAMPLE}: {missing:?}"
    );
    let uncommented: Vec<&str> = found
        .iter()
        .filter(|a| !a.commented)
        .map(|a| a.path.as_str())
        .collect();
    assert!(
        uncommented.is_empty(),
        "keys in {EXAMPLE} without a `#` comment above them: {uncommented:?}"
    );
    let order: Vec<&str> = found.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        order,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{EXAMPLE} must list the keys in the order of the structs in src/config.rs"
    );
    Ok(())
}

#[test]
fn reference_names_every_key() -> TestResult {
    let reference = read(REFERENCE)?;
    let default_prefix = format!("namespaces.{DEFAULT_NAMESPACE}.");
    let missing: Vec<String> = default_keys()?
        .into_iter()
        .map(|key| match key.strip_prefix(&default_prefix) {
            Some(option) => format!("namespaces.<name>.{option}"),
            None => key,
        })
        .filter(|key| !reference.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys not documented in {REFERENCE}: {missing:?}"
    );
    Ok(())
}
