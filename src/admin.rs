//! The admin app: `GET /metrics`, `/healthz`, `/readyz`, `/status` (JSON), `/`
//! (the same status as an HTML page for people, with charts), `/status/history`
//! (the charts' samples), `/events` (the lifecycle events, streamed), and
//! `POST /reload`, `POST /pools/<name>/scale?workers=N` and
//! `POST /pools/<name>/restart`. The
//! POSTs are carried out by the control object (`control`), whose typed replies
//! are rendered here.
//!
//! One app serves two listeners, each with its own rule for the POSTs ([`Access`]):
//!
//! - the control socket (`admin.socket`): anyone who can connect, which its file mode
//!   (0600) limits to forkyard's user and root;
//! - `admin.listen` (TCP): with `admin.token` (or `admin.token_file`) set, every
//!   POST needs `Authorization: Bearer <token>` and gets 401 with
//!   `WWW-Authenticate: Bearer` without it (compared in constant time). Without a
//!   token, POSTs are answered on a loopback address only, and get 403 elsewhere,
//!   with a body that says how to enable them.
//!
//! The GET endpoints are open on both: they change nothing, and probes and scrapers
//! must not need a secret.
//!
//! It runs on the control runtime, apart from the proxy's threads, so a saturated
//! proxy does not stop Prometheus or a probe from getting an answer.
//!
//! Most answers are whole; `GET /events` is a stream ([`events`]), so the app is a
//! Pingora `HttpServerApp` of its own rather than a `ServeHttp`. The page's script
//! and style sheet are served from the binary ([`assets`]): nothing the page uses
//! comes from elsewhere.

mod assets;
mod events;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{AdminAuth, Verdict};
use crate::control::{Command, ReloadResult};
use crate::events::hub::Hub;
use crate::history::History;
use crate::pool::Pool;
use crate::status::{table, StatusBoard, StatusReport};
use crate::supervisor::{CrashLoop, PoolError, Rollout};
use crate::worker_metrics::WorkerMetrics;

/// How often the HTML status page refreshes its tables.
const PAGE_REFRESH_SECONDS: u32 = 2;

/// Whether forkyard should receive traffic: every pool has a ready worker and no
/// shutdown has begun.
pub(crate) struct Readiness {
    shutting_down: AtomicBool,
    pools: Vec<(Arc<Pool>, Arc<CrashLoop>)>,
}

impl Readiness {
    pub(crate) fn new(pools: Vec<(Arc<Pool>, Arc<CrashLoop>)>) -> Arc<Readiness> {
        Arc::new(Readiness {
            shutting_down: AtomicBool::new(false),
            pools,
        })
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether `pool`'s crash-loop breaker has marked it degraded.
    pub(crate) fn is_degraded(&self, pool: &str) -> bool {
        self.pools
            .iter()
            .any(|(p, c)| &*p.name == pool && c.is_degraded())
    }

    /// `Ok` (with notes, e.g. degraded pools) when ready, else the reasons it is not.
    pub(crate) fn check(&self) -> Result<String, String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let empty: Vec<&str> = self
            .pools
            .iter()
            .filter(|(p, _)| p.ready() == 0)
            .map(|(p, _)| &*p.name)
            .collect();
        let degraded: Vec<&str> = self
            .pools
            .iter()
            .filter(|(_, c)| c.is_degraded())
            .map(|(p, _)| &*p.name)
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

pub(crate) struct AdminApp {
    /// forkyard's own metrics and, merged after them, the workers' (`metrics:`).
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) auth: Arc<AdminAuth>,
    /// The lifecycle events `GET /events` streams.
    pub(crate) hub: &'static Hub,
    /// The samples `GET /status/history` serves.
    pub(crate) history: Arc<History>,
    /// Open `GET /events` streams, which the shutdown lets finish.
    pub(crate) streams: watch::Sender<usize>,
}

/// The status code of a pool command's error.
fn pool_error(e: &PoolError) -> Response<Vec<u8>> {
    let status = match e {
        PoolError::UnknownPool(_) => StatusCode::NOT_FOUND,
        PoolError::OutOfRange { .. } => StatusCode::BAD_REQUEST,
    };
    text(status, format!("{e}\n"))
}

/// `/pools/<name>/<action>` → the pool name.
fn pool_path<'a>(path: &'a str, action: &str) -> Option<&'a str> {
    path.strip_prefix("/pools/")
        .and_then(|p| p.strip_suffix(action))
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| !p.is_empty() && !p.contains('/'))
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

    /// Send `command` to the control loop and wait for its reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Response<Vec<u8>>> {
        let (reply, answer) = oneshot::channel();
        let shutting_down = || text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        if self.commands.send(make(reply)).is_err() {
            return Err(shutting_down());
        }
        answer.await.map_err(|_| shutting_down())
    }

    /// `POST /reload`: 200 when applied, 409 when rolled back, 422 when the file is
    /// invalid or a change needs a restart.
    async fn reload(&self) -> Response<Vec<u8>> {
        let report = match self.ask(|reply| Command::Reload { reply }).await {
            Ok(r) => r,
            Err(response) => return response,
        };
        let status = match report.result {
            ReloadResult::Applied => StatusCode::OK,
            ReloadResult::RolledBack => StatusCode::CONFLICT,
            ReloadResult::Invalid | ReloadResult::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        };
        text(status, format!("{report}\n"))
    }

    /// `POST /pools/<name>/scale?workers=N`.
    async fn scale(&self, pool: &str, query: Option<&str>) -> Response<Vec<u8>> {
        let workers = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("workers="))
            .and_then(|v| v.parse::<usize>().ok());
        let Some(workers) = workers else {
            return text(StatusCode::BAD_REQUEST, "expected ?workers=N\n".into());
        };
        let pool = pool.to_string();
        match self
            .ask(|reply| Command::Scale {
                pool: pool.clone(),
                workers,
                reply,
            })
            .await
        {
            Ok(Ok(s)) => text(
                StatusCode::OK,
                format!("pool {pool}: {} -> {} workers\n", s.from, s.to),
            ),
            Ok(Err(e)) => pool_error(&e),
            Err(response) => response,
        }
    }

    /// `POST /pools/<name>/restart`: 200 once every worker was replaced, 409 when a
    /// new worker did not become ready and the pool was rolled back.
    async fn restart(&self, pool: &str) -> Response<Vec<u8>> {
        let pool = pool.to_string();
        match self
            .ask(|reply| Command::Restart {
                pool: pool.clone(),
                reply,
            })
            .await
        {
            Ok(Ok(Rollout::Done)) => text(
                StatusCode::OK,
                format!("pool {pool}: every worker replaced\n"),
            ),
            Ok(Ok(Rollout::RolledBack { slot })) => text(
                StatusCode::CONFLICT,
                format!("pool {pool}: rolled back (the new worker of slot {slot} did not become ready); the old workers keep serving\n"),
            ),
            Ok(Err(e)) => pool_error(&e),
            Err(response) => response,
        }
    }
}

/// Who may use the POST endpoints on one listener of the admin app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The control socket: its file mode decided who could connect; no token.
    Socket,
    /// `admin.listen` at this address: with a token set, requests that carry it;
    /// without one, anyone on a loopback address and no one elsewhere.
    Tcp(SocketAddr),
}

/// What becomes of a request that would change something.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Pass,
    /// A token is set and the request does not carry it: 401.
    Unauthorized,
    /// No token, and a listener other machines can reach: 403.
    Closed(SocketAddr),
}

fn gate(access: Access, verdict: Verdict) -> Gate {
    match (access, verdict) {
        (Access::Socket, _) | (_, Verdict::Valid) => Gate::Pass,
        (Access::Tcp(_), Verdict::Wrong) => Gate::Unauthorized,
        (Access::Tcp(addr), Verdict::NoToken) if addr.ip().is_loopback() => Gate::Pass,
        (Access::Tcp(addr), Verdict::NoToken) => Gate::Closed(addr),
    }
}

/// The admin app on one listener, with that listener's rule for the POSTs.
pub(crate) struct AdminListener {
    pub(crate) app: Arc<AdminApp>,
    pub(crate) access: Access,
}

#[async_trait]
impl HttpServerApp for AdminListener {
    /// One request: a stream for `GET /events`, else a whole answer (as Pingora's
    /// `ServeHttp` would give it), after which the connection may be reused.
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "admin: could not read a request");
                return None;
            }
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let req = http.req_header();
        let response = if req.method == Method::GET && req.uri.path() == "/events" {
            let last_id = req.headers.get("last-event-id").map(|v| v.as_bytes());
            match events::replay(req.uri.query(), last_id) {
                Ok(replay) => {
                    let app = &self.app;
                    events::stream(
                        app.hub,
                        app.metrics.own(),
                        &app.streams,
                        &mut http,
                        replay,
                        shutdown.clone(),
                    )
                    .await;
                    return None;
                }
                Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
            }
        } else {
            self.app.serve(&mut http, self.access).await
        };
        let (parts, body) = response.into_parts();
        let header: ResponseHeader = parts.into();
        if let Err(e) = http.write_response_header(Box::new(header)).await {
            tracing::debug!(error = %e, "admin: could not write an answer");
            return None;
        }
        if !body.is_empty() {
            if let Err(e) = http.write_response_body(body.into(), true).await {
                tracing::debug!(error = %e, "admin: could not write an answer");
                return None;
            }
        }
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(e) => {
                tracing::debug!(error = %e, "admin: could not finish an answer");
                None
            }
        }
    }
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send Authorization: Bearer <admin.token>\n".into(),
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"forkyard admin\""),
    );
    response
}

fn closed(addr: SocketAddr) -> Response<Vec<u8>> {
    text(
        StatusCode::FORBIDDEN,
        format!(
            "POST is closed on admin.listen {addr}: it is not a loopback address and no admin.token is set.\n\
             To change what runs, either\n\
             - run `forkyard reload`, `forkyard scale POOL N` or `forkyard restart POOL` where forkyard runs \
             (they use its control socket, admin.socket), or\n\
             - set admin.token or admin.token_file and send Authorization: Bearer <token>.\n"
        ),
    )
}

impl AdminApp {
    async fn serve(&self, session: &mut ServerSession, access: Access) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            let verdict = self
                .auth
                .verdict(req.headers.get(http::header::AUTHORIZATION));
            match gate(access, verdict) {
                Gate::Pass => {}
                Gate::Unauthorized => return unauthorized(),
                Gate::Closed(addr) => return closed(addr),
            }
        }
        if req.method == Method::POST {
            let (path, query) = (
                req.uri.path().to_string(),
                req.uri.query().map(str::to_string),
            );
            if path == "/reload" {
                return self.reload().await;
            }
            if let Some(pool) = pool_path(&path, "scale") {
                return self.scale(pool, query.as_deref()).await;
            }
            if let Some(pool) = pool_path(&path, "restart") {
                return self.restart(pool).await;
            }
            return text(
                StatusCode::NOT_FOUND,
                "not found; POST /reload, /pools/<name>/scale?workers=N or /pools/<name>/restart\n"
                    .into(),
            );
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, or POST for changes\n".into(),
            );
        }
        match req.uri.path() {
            "/metrics" => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", prometheus::TEXT_FORMAT)
                .body(self.metrics.exposition().await)
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
                let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", body);
                assets::protect(&mut response);
                response
            }
            "/status/history" => {
                let since = req
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("since="));
                let since = match since.map(str::parse::<f64>) {
                    None => None,
                    Some(Ok(t)) if t.is_finite() => Some(t),
                    Some(_) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "expected ?since=UNIX_TIME (a number of seconds)\n".into(),
                        )
                    }
                };
                let mut body = serde_json::to_vec(&self.history.report(since)).unwrap_or_default();
                body.push(b'\n');
                respond(StatusCode::OK, "application/json", body)
            }
            "/events" => {
                // HEAD: what a GET would start with.
                respond(StatusCode::OK, "text/event-stream; charset=utf-8", Vec::new())
            }

            "/readyz" => match self.readiness.check() {
                Ok(note) if note.is_empty() => text(StatusCode::OK, "ready\n".into()),
                Ok(note) => text(StatusCode::OK, format!("ready; {note}\n")),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            path => match assets::get(path) {
                Some((content_type, body)) => {
                    let mut response = respond(StatusCode::OK, content_type, body.to_vec());
                    assets::protect(&mut response);
                    response
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    "not found; try /, /status, /status/history, /events, /metrics, /healthz or /readyz\n".into(),
                ),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_post_on_each_listener() {
        let public: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let v6: SocketAddr = "[::]:9090".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let local6: SocketAddr = "[::1]:9090".parse().unwrap();
        for verdict in [Verdict::NoToken, Verdict::Valid, Verdict::Wrong] {
            assert_eq!(gate(Access::Socket, verdict), Gate::Pass, "{verdict:?}");
        }
        for addr in [public, v6, local, local6] {
            assert_eq!(gate(Access::Tcp(addr), Verdict::Valid), Gate::Pass);
            assert_eq!(gate(Access::Tcp(addr), Verdict::Wrong), Gate::Unauthorized);
        }
        assert_eq!(gate(Access::Tcp(local), Verdict::NoToken), Gate::Pass);
        assert_eq!(gate(Access::Tcp(local6), Verdict::NoToken), Gate::Pass);
        assert_eq!(
            gate(Access::Tcp(public), Verdict::NoToken),
            Gate::Closed(public)
        );
        assert_eq!(gate(Access::Tcp(v6), Verdict::NoToken), Gate::Closed(v6));
    }
}
