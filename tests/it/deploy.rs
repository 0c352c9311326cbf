//! The deployment files' view of the daemon: every metric the Grafana dashboard and the
//! Prometheus alerts use is exported by the running daemon.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("secret_rotator_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

/// The series a daemon exports only as an HA replica.
pub fn ha_metric(name: &str) -> bool {
    name.starts_with("secret_rotator_leader") || name.starts_with("secret_rotator_lease_")
}

/// The metric names the dashboard and the alerts use.
pub fn used_metrics() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used = metric_names(
        &std::fs::read_to_string(root.join("deploy/grafana/secret-rotator.json")).unwrap(),
    );
    used.extend(metric_names(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap(),
    ));
    used
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let used = used_metrics();
    assert!(used.len() >= 10, "found the metric names: {used:?}");

    let env = Env::new(Setup::default()).await;
    // One event sink, so that its series exist.
    env.write_config("", "\n[[events]]\nkind = \"exec\"\nargv = [\"true\"]\n");
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(30), || !env
            .versions("app-one")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, scrape) = daemon.get("/metrics").await.unwrap();
    // A family with nothing to report (no drift found, the inventory off) is still declared.
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if !l.starts_with('#') && !l.is_empty() => l.split(['{', ' ']).next(),
            None => None,
        })
        .map(str::to_string)
        .collect();
    // High availability's series exist only with [ha]: tests/it/ha.rs checks those.
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !ha_metric(n))
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboard or alerts but not exported: {missing:?}"
    );
}
