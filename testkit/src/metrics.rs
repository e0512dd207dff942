//! Prometheus metrics as a test sees them: fetched with curl, parsed with the
//! official Python client's parser.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Waits until `http://ADDR/metrics` serves a sample named `name` (with no
/// `le` label) for which `ok` holds, and returns its value; fails the test
/// with the last scrape when `timeout` passes first.
pub fn wait_for_metric(addr: &str, name: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    crate::wait_for(timeout, || {
        let text = scrape(addr)?;
        let v = value(&parse_metrics(&text), name);
        last = Some(text);
        v.filter(|v| ok(*v))
    })
    .unwrap_or_else(|| {
        panic!("no {name} as expected from http://{addr}/metrics within {timeout:?}; last scrape:\n{last:?}")
    })
}

/// Fetches `http://ADDR/metrics` with curl; `None` until the server answers.
pub fn scrape(addr: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (run scripts/setup.sh): {e}"));
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One parsed sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Sample name (e.g. `x_bucket` for a histogram bucket).
    pub name: String,
    /// Label set.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed family: name, type, samples.
#[derive(Debug, Clone)]
pub struct Family {
    /// The family name as the parser reports it (counters lose `_total`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    /// Samples.
    pub samples: Vec<Sample>,
}

const PARSER: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
# Non-finite values as strings: JSON has no NaN/Inf.
val = lambda v: v if math.isfinite(v) else str(v)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": val(s.value)} for s in fam.samples]})
print(json.dumps(out))
"#;

/// Parses exposition text with the official Python client's parser (from the
/// Debian package `python3-prometheus-client`, hence `/usr/bin/python3`).
/// Panics with the parser's message when the text is invalid.
pub fn parse_metrics(text: &str) -> Vec<Family> {
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut child = Command::new(python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "the Prometheus parser is missing: run scripts/setup.sh (apt package python3-prometheus-client)"
    );
    assert!(out.status.success(), "the Prometheus parser rejected the metrics text: {err}\n--- text ---\n{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser output is JSON");
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    v.as_array()
        .expect("parser output is a list")
        .iter()
        .map(|f| Family {
            name: str_of(&f["name"]),
            kind: str_of(&f["type"]),
            samples: f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    name: str_of(&s["name"]),
                    labels: s["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), str_of(v)))
                        .collect(),
                    value: s["value"]
                        .as_f64()
                        .or_else(|| s["value"].as_str().and_then(|t| t.parse().ok()))
                        .unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect()
}

/// Finds a family by its exposition name (`x_total` also matches family `x`).
pub fn family<'a>(fams: &'a [Family], name: &str) -> Option<&'a Family> {
    fams.iter().find(|f| f.name == name || name.strip_suffix("_total").is_some_and(|n| f.name == n))
}

/// The value of the sample named `name` with no `le`/quantile label (the first).
pub fn value(fams: &[Family], name: &str) -> Option<f64> {
    fams.iter().flat_map(|f| &f.samples).find(|s| s.name == name && !s.labels.contains_key("le")).map(|s| s.value)
}
