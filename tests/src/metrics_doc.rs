//! The metric names docs/METRICS.md lists (a server test keeps them equal
//! to the exporter's), and the metric names a PromQL text uses: what the
//! alert rules and the Grafana dashboard may use is checked against them.

use std::path::PathBuf;

/// A file of the repository, read.
pub fn repo_file(path: &str) -> String {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The metrics docs/METRICS.md's table lists for the key server (what a
/// scrape of it returns; the agent's own metrics are a section of their
/// own).
pub fn exported() -> Vec<String> {
    let doc = repo_file("docs/METRICS.md");
    doc.split("## The agent's metrics")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("gkm_"))
        .map(str::to_owned)
        .collect()
}

/// Every `gkm_...` name in `text`, a histogram's `_bucket`, `_count` or
/// `_sum` suffix taken off when the rest is one of `known`.
pub fn metric_names(text: &str, known: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("gkm_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| known.iter().any(|k| k == b))
            .map_or(name.clone(), str::to_owned);
        out.push(base);
    }
    out
}
