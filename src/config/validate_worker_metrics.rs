//! Validation of a pool's `metrics:` key: where its workers serve their own
//! Prometheus metrics, for forkyard to merge into its `/metrics`.

use std::time::Duration;

use super::duration::show;
use super::location::KeyPath;
use super::model::{WorkerMetrics, MAX_WORKER_METRICS_TIMEOUT};
use super::raw::RawWorkerMetrics;
use super::validate::Checker;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_SERIES: usize = 10_000;
const MAX_SERIES: usize = 1_000_000;

impl Checker<'_> {
    pub(super) fn worker_metrics(
        &mut self,
        raw: Option<RawWorkerMetrics>,
        path: &KeyPath,
    ) -> Option<WorkerMetrics> {
        let raw = raw?;
        let path_key = path.key("path");
        let metrics_path = match raw.path {
            None => {
                self.missing(
                    &path_key,
                    r#"where each worker serves its Prometheus metrics, e.g. "/metrics""#,
                );
                String::from("/metrics")
            }
            Some(p) if !p.starts_with('/') || p.contains(char::is_whitespace) => {
                self.error(
                    &path_key,
                    format!(r#"metrics path {p:?} must start with "/" and have no spaces"#),
                );
                String::from("/metrics")
            }
            Some(p) => p,
        };
        let timeout_key = path.key("timeout");
        let timeout = self.timeout_or(raw.timeout, &timeout_key, DEFAULT_TIMEOUT);
        if timeout > MAX_WORKER_METRICS_TIMEOUT {
            self.error(
                &timeout_key,
                format!(
                    "timeout {} is too long: at most {} (Prometheus' default scrape_timeout), or a slow worker would fail the whole scrape of forkyard",
                    show(timeout),
                    show(MAX_WORKER_METRICS_TIMEOUT)
                ),
            );
        }
        let max_series = match raw.max_series {
            None => DEFAULT_MAX_SERIES,
            Some(n) if (1..=MAX_SERIES).contains(&n) => n,
            Some(n) => {
                self.error(
                    &path.key("max_series"),
                    format!("max_series {n} is out of range (1 to {MAX_SERIES})"),
                );
                DEFAULT_MAX_SERIES
            }
        };
        Some(WorkerMetrics {
            path: metrics_path,
            timeout: timeout.min(MAX_WORKER_METRICS_TIMEOUT),
            max_series,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{load_from_str, WorkerMetrics};

    const POOL: &str = "pools:\n  web:\n    command: [app]\n    ports: \"9001\"\n";

    fn load(metrics: &str) -> Result<Option<WorkerMetrics>, Vec<String>> {
        load_from_str(
            &format!("{POOL}    metrics: {metrics}\n"),
            Path::new("config.yaml"),
            &|_| None,
        )
        .map(|c| c.pools[0].metrics.clone())
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            load("{ path: /metrics }").unwrap(),
            Some(WorkerMetrics {
                path: "/metrics".into(),
                timeout: Duration::from_secs(2),
                max_series: 10_000,
            })
        );
        let m = load("{ path: \"/m?x=1\", timeout: 250ms, max_series: 5 }")
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.path.as_str(), m.timeout, m.max_series),
            ("/m?x=1", Duration::from_millis(250), 5)
        );
        let none = load_from_str(POOL, Path::new("config.yaml"), &|_| None).unwrap();
        assert_eq!(none.pools[0].metrics, None);
    }

    #[test]
    fn bad_values_are_reported_where_they_are() {
        for (metrics, want) in [
            (
                "{ timeout: 1s }",
                r#"config.yaml:5:5: pools.web.metrics.path: missing required key "path""#,
            ),
            (
                "{ path: metrics }",
                r#"pools.web.metrics.path: metrics path "metrics" must start with "/""#,
            ),
            (
                "{ path: /m, timeout: 0s }",
                "pools.web.metrics.timeout: timeout must be greater than 0",
            ),
            (
                "{ path: /m, timeout: 30s }",
                "pools.web.metrics.timeout: timeout 30s is too long: at most 10s",
            ),
            (
                "{ path: /m, max_series: 0 }",
                "pools.web.metrics.max_series: max_series 0 is out of range (1 to 1000000)",
            ),
            (
                "{ path: /m, pth: /x }",
                r#"pools.web.metrics.pth: unknown key "pth" (expected one of: path, timeout, max_series); did you mean "path"?"#,
            ),
        ] {
            let errors = load(metrics).expect_err(metrics);
            assert_eq!(errors.len(), 1, "{metrics}: {errors:?}");
            assert!(
                errors[0].contains(want),
                "{metrics}:\n{}\nwanted {want}",
                errors[0]
            );
        }
    }
}
