//! The documentation cannot drift from the code: every `CERTFLOW_*` setting the binaries or
//! the deployment files read is in docs/configuration.md, and every page the README links to
//! exists.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// `CERTFLOW_*` names in `text` (quoted in Rust sources, bare in scripts).
fn names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("CERTFLOW_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if name.len() > "CERTFLOW_".len() && !name.ends_with('_') {
            found.push(name.to_string());
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn every_setting_is_documented() {
    let root = root();
    let documented = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut sources = Vec::new();
    for crate_dir in [
        "common",
        "workflows",
        "activities",
        "audit",
        "worker",
        "starter-api",
    ] {
        files(&root.join(crate_dir).join("src"), "rs", &mut sources);
    }
    files(&root.join("deploy"), "sh", &mut sources);
    sources.push(root.join("docker-compose.yml"));
    let mut missing: Vec<String> = sources
        .iter()
        .flat_map(|p| names(&std::fs::read_to_string(p).unwrap()))
        .filter(|n| !documented.contains(n.as_str()))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "settings read but not in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn the_readmes_links_lead_somewhere() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (_, rest) in readme
        .match_indices("](")
        .map(|(i, _)| ((), &readme[i + 2..]))
    {
        let target = rest.split(')').next().unwrap().split('#').next().unwrap();
        if target.is_empty() || target.starts_with("http") {
            continue;
        }
        assert!(
            root.join(target).exists(),
            "README links to {target}, which is not there"
        );
    }
}
