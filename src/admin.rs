//! The admin listener: `GET /metrics`, `/healthz`, `/readyz`, `/status` (JSON) and
//! `/` (the same status as an HTML page for people).
//!
//! It runs on the control runtime, apart from the proxy's threads, so a saturated
//! proxy does not stop Prometheus or a probe from getting an answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::status::{table, StatusBoard, StatusReport};
use crate::supervisor::PoolHandle;

/// How often the HTML status page reloads itself.
const PAGE_REFRESH_SECONDS: u32 = 2;

/// Whether forkyard should receive traffic: every pool has a ready worker and no
/// shutdown has begun.
pub struct Readiness {
    shutting_down: AtomicBool,
    pools: Vec<PoolHandle>,
}

impl Readiness {
    pub fn new(pools: Vec<PoolHandle>) -> Arc<Readiness> {
        Arc::new(Readiness {
            shutting_down: AtomicBool::new(false),
            pools,
        })
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether `pool`'s crash-loop breaker has marked it degraded.
    pub fn is_degraded(&self, pool: &str) -> bool {
        self.pools
            .iter()
            .any(|p| p.config.name == pool && p.crash_loop.is_degraded())
    }

    /// `Ok` (with notes, e.g. degraded pools) when ready, else the reasons it is not.
    pub fn check(&self) -> Result<String, String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let empty: Vec<&str> = self
            .pools
            .iter()
            .filter(|p| p.upstreams.ready_count() == 0)
            .map(|p| p.config.name.as_str())
            .collect();
        let degraded: Vec<&str> = self
            .pools
            .iter()
            .filter(|p| p.crash_loop.is_degraded())
            .map(|p| p.config.name.as_str())
            .collect();
        let note = if degraded.is_empty() {
            String::new()
        } else {
            format!("; degraded (crash loop): {}", degraded.join(", "))
        };
        if empty.is_empty() {
            Ok(note.trim_start_matches("; ").to_string())
        } else {
            Err(format!(
                "no ready worker in pool(s): {}{note}",
                empty.join(", ")
            ))
        }
    }
}

pub struct AdminApp {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub board: Arc<StatusBoard>,
}

impl AdminApp {
    /// The status board's snapshot, with readiness and crash-loop state added.
    fn report(&self) -> StatusReport {
        let mut report = self.board.report(self.readiness.check().err());
        for pool in &mut report.pools {
            pool.degraded = self.readiness.is_degraded(&pool.name);
        }
        report
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        }
        match req.uri.path() {
            "/metrics" => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", prometheus::TEXT_FORMAT)
                .body(self.metrics.encode())
                .unwrap_or_default(),
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/status" => {
                let report = self.report();
                let mut body = serde_json::to_vec_pretty(&report).unwrap_or_default();
                body.push(b'\n');
                respond(StatusCode::OK, "application/json", body)
            }
            "/" => {
                let report = self.report();
                let body = table::html(&report, PAGE_REFRESH_SECONDS).into_bytes();
                respond(StatusCode::OK, "text/html; charset=utf-8", body)
            }
            "/readyz" => match self.readiness.check() {
                Ok(note) if note.is_empty() => text(StatusCode::OK, "ready\n".into()),
                Ok(note) => text(StatusCode::OK, format!("ready; {note}\n")),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /, /status, /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}
