//! The shape of the source tree, checked the way rust-analyzer's tidy test does: every Rust
//! file of the server (`src/`), the load generator (`loadtest/src/`), the fuzz targets and
//! the tests opens with a `//!` header saying what it is for, and none is longer than
//! [`MAX_LINES`] lines (a longer file is doing more than one job: split it by concern).

use std::path::{Path, PathBuf};

/// The most lines one source file may have.
const MAX_LINES: usize = 600;

/// Files still over [`MAX_LINES`], each waiting for its split. The list only shrinks: an
/// entry whose file has come down to the limit fails the test until it is removed, and no
/// file may join it.
const OVER_LIMIT_UNTIL_SPLIT: &[&str] = &[];

/// Directories (relative to the repository root) whose `.rs` files are checked.
const ROOTS: &[&str] = &["src", "loadtest/src", "fuzz/fuzz_targets", "tests"];

/// Directories under the roots that hold no Rust of ours.
const SKIPPED: &[&str] = &["tests/clients", "tests/data"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, as paths relative to the repository root with `/`.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let relative = path
            .strip_prefix(root)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_dir() {
            if !SKIPPED.contains(&relative.as_str()) {
                rust_files(root, &path, out)?;
            }
        } else if relative.ends_with(".rs") {
            out.push(relative);
        }
    }
    Ok(())
}

fn all_rust_files() -> Vec<(String, String)> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root, &root.join(dir), &mut files)
            .unwrap_or_else(|e| panic!("listing {dir}: {e}"));
    }
    files.sort();
    assert!(
        files.len() > 100,
        "found only {} Rust files: is the repository root {}?",
        files.len(),
        root.display()
    );
    files
        .into_iter()
        .map(|relative| {
            let text = std::fs::read_to_string(root.join(&relative))
                .unwrap_or_else(|e| panic!("reading {relative}: {e}"));
            (relative, text)
        })
        .collect()
}

/// The files that do not start with a `//!` header.
fn without_header(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| path.clone())
        .collect()
}

/// Files over the limit that are not listed, and listed files that no longer are (or are
/// gone).
fn over_limit(files: &[(String, String)], listed: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut too_long = Vec::new();
    let mut split_already = Vec::new();
    for (path, text) in files {
        let lines = text.lines().count();
        let is_listed = listed.contains(&path.as_str());
        if lines > MAX_LINES && !is_listed {
            too_long.push(format!("{path} ({lines} lines)"));
        }
        if lines <= MAX_LINES && is_listed {
            split_already.push(format!("{path} ({lines} lines)"));
        }
    }
    for entry in listed {
        if !files.iter().any(|(path, _)| path == entry) {
            split_already.push(format!("{entry} (gone)"));
        }
    }
    (too_long, split_already)
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing = without_header(&all_rust_files());
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` header saying what they are for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn no_source_file_passes_the_line_limit() {
    let (too_long, split_already) = over_limit(&all_rust_files(), OVER_LIMIT_UNTIL_SPLIT);
    assert!(
        too_long.is_empty(),
        "over {MAX_LINES} lines; split these by concern:\n  {}",
        too_long.join("\n  ")
    );
    assert!(
        split_already.is_empty(),
        "now within {MAX_LINES} lines; remove them from OVER_LIMIT_UNTIL_SPLIT:\n  {}",
        split_already.join("\n  ")
    );
}

#[test]
fn the_checks_catch_a_missing_header_a_long_file_and_a_stale_entry() {
    let file = |path: &str, text: String| (path.to_string(), text);
    let long = "//! Long.\n".to_string() + &"fn f() {}\n".repeat(MAX_LINES);
    let files = [
        file("src/a.rs", "use std::io;\n".into()),
        file("src/b.rs", "//! Fine.\n".into()),
        file("src/long.rs", long.clone()),
        file("src/listed_long.rs", long),
        file("src/listed_short.rs", "//! Short now.\n".into()),
    ];
    assert_eq!(without_header(&files), ["src/a.rs"]);
    let listed = [
        "src/listed_long.rs",
        "src/listed_short.rs",
        "src/deleted.rs",
    ];
    let (too_long, stale) = over_limit(&files, &listed);
    assert_eq!(too_long, [format!("src/long.rs ({} lines)", MAX_LINES + 1)]);
    assert_eq!(
        stale,
        ["src/listed_short.rs (1 lines)", "src/deleted.rs (gone)"]
    );
}
