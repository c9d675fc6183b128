//! The front proxy: routes each request to a pool and balances it over that pool's
//! ready workers, on two paths that share every decision.
//!
//! - [`listen`]: `proxy.threads` threads, each with its own runtime and
//!   `SO_REUSEPORT` listening sockets; [`conn`] serves each client connection:
//!   it reads each request head within its limits and takes the common request
//!   (HTTP/1.1, an ordinary method, no body or one within `buffer.request`) on
//!   forkyard's lean path ([`exchange`], with [`request`], [`response`] and
//!   per-thread upstream keep-alive pools in [`upconn`]).
//! - Anything else (WebSocket upgrades, large or streamed bodies, HTTP/1.0, a head
//!   `httparse` refuses) is handed, bytes already read put back, to Pingora's HTTP
//!   proxy, for the rest of the connection: [`front`] guards its request heads and
//!   [`ForkyardProxy`] implements Pingora's `ProxyHttp` hooks with the same rules.
//! - Both paths route with the [`Router`], pick a worker from the pool's
//!   [`upstreams::Table`] with its algorithm ([`selection`]) and admission
//!   (`max_in_flight` and the queue), eject outliers ([`eject`]), set
//!   `X-Forwarded-*`, `X-Request-Id` and `X-Request-Start` ([`headers`]), and
//!   record metrics and the access log ([`access_log`]) once per request.
//! - A request that matches no route gets 404; a pool with no ready worker gets 503.
//! - With `hang:`, each attempt is listed in its worker's requests in flight
//!   (`pool::pending`) until it ends, waiting for its response head until that
//!   arrives; the worker's supervisor counts one that waited `hang.after` as hung.
//!   A hung request whose attempt fails (its worker was killed, or the head
//!   timeout passed) is answered 504 and never retried.
//! - A connect failure is retried on a worker not yet tried, for any method. A
//!   connection the worker reset or closed before its answer reached the client is
//!   retried for idempotent methods; on the lean path a response within
//!   `buffer.response` is read whole first, so this covers a worker that dies
//!   between its head and its body. A response in `retry_on` (or a response-head
//!   timeout with `timeout` in it) is retried only for idempotent methods and only
//!   while nothing has been sent to the client. At most `retries` extra attempts.
//! - Every request holds an [`InFlight`] guard, so shutdown can wait for the proxy to
//!   drain.
//!
//! Every setting is read from its one owner at the moment it is used: a pool's
//! from its [`upstreams::Table`], the client limits from [`ProxySettings`], the
//! routes from the [`Router`], so a reload applies to the next request.
//! Per-request work avoids locks and label lookups: metric handles are resolved when
//! a worker is admitted, worker state is atomics, and selection does not allocate.

pub(crate) mod access_log;
pub(crate) mod conn;
pub(crate) mod eject;
mod exchange;
pub(crate) mod front;
pub(crate) mod headers;
pub(crate) mod inflight;
pub(crate) mod listen;
mod request;
mod response;
pub(crate) mod router;
pub(crate) mod selection;
mod upconn;
pub(crate) mod upstreams;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use prometheus::IntCounter;

use crate::config::{LbPolicy, ProxyConfig};
pub(crate) use front::HeadLimits;
pub(crate) use inflight::{InFlight, InFlightGuard};
pub(crate) use router::Router;
pub(crate) use upstreams::Upstream;
use upstreams::{Lease, Table};

/// Limits on what clients may send and how long they may stall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ClientLimits {
    /// Each read of a request body, each write of a response.
    pub io_timeout: Duration,
    /// Keep-alive idle time between requests, in whole seconds (at least 1).
    pub idle_secs: u64,
    pub max_header_size: usize,
    pub max_body: u64,
}

/// The proxy-wide settings (`proxy.*` but the listeners and threads), replaced
/// whole by a reload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProxySettings {
    pub client: ClientLimits,
    pub head: HeadLimits,
}

impl ProxySettings {
    pub(crate) fn of(proxy: &ProxyConfig) -> ProxySettings {
        ProxySettings {
            client: ClientLimits {
                io_timeout: proxy.client_timeout,
                idle_secs: proxy.idle_timeout.as_secs().max(1),
                max_header_size: proxy.max_header_size,
                max_body: proxy.max_body,
            },
            head: HeadLimits {
                timeout: proxy.client_header_timeout,
                max_size: proxy.max_header_size,
            },
        }
    }
}

/// What both paths share: the pools, the routes, the settings, the records.
pub(crate) struct Shared {
    /// In config order; the router's indexes point here.
    pub(crate) pools: Vec<Arc<Upstream>>,
    pub(crate) router: Arc<ArcSwap<Router>>,
    pub(crate) settings: Arc<ArcSwap<ProxySettings>>,
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) unrouted: IntCounter,
    pub(crate) access_log: Arc<ArcSwapOption<access_log::AccessLog>>,
}

/// The Pingora path: requests the lean path leaves to Pingora's HTTP proxy.
pub(crate) struct ForkyardProxy {
    pub(crate) shared: Arc<Shared>,
}

impl std::ops::Deref for ForkyardProxy {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

pub(crate) struct RequestCtx {
    _inflight: InFlightGuard,
    start: Instant,
    pool: Option<usize>,
    /// The attempt in progress.
    current: Option<Lease>,
    /// Members tried by earlier attempts (the current one is in `current`).
    tried: Vec<u64>,
    attempts: u32,
    hash_key: Option<u64>,
    /// `upstream_response_filter` turned a response into a retry.
    retry_response: bool,
    body_bytes: u64,
    /// Generated here, when the client sent none.
    request_id: Option<HeaderValue>,
    /// The slot of the last attempt.
    last_worker: Option<usize>,
    /// Why no worker was had, when none was.
    refusal: Option<upstreams::Refusal>,
    /// When the request's head was read, in microseconds since the epoch
    /// (`X-Request-Start`).
    start_us: u64,
    /// The request was counted as hung (`hang:`) and its attempt failed: 504.
    hung: bool,
}

impl ForkyardProxy {
    fn pool(&self, ctx: &RequestCtx) -> Option<&Upstream> {
        ctx.pool.and_then(|i| self.pools.get(i)).map(|p| &**p)
    }
}

/// Whether a response-side failure may be retried on another worker.
fn may_retry(session: &Session, ctx: &RequestCtx, table: &Table) -> bool {
    ctx.attempts <= table.upstream().retries
        && session.req_header().method.is_idempotent()
        && session.response_written().is_none()
        && !session.as_ref().retry_buffer_truncated()
        && table.entries.len() > ctx.tried.len() + 1
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for ForkyardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.inflight.enter(),
            start: Instant::now(),
            pool: None,
            current: None,
            tried: Vec::new(),
            attempts: 0,
            hash_key: None,
            retry_response: false,
            body_bytes: 0,
            request_id: None,
            last_worker: None,
            refusal: None,
            start_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            hung: false,
        }
    }

    /// No response compression (Pingora adds a disabled compression module by
    /// default; it still costs work per response).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let _ = front::with_conn(|c| c.head_done());
        let limits = self.settings.load().client;
        session.set_read_timeout(Some(limits.io_timeout));
        session.set_write_timeout(Some(limits.io_timeout));
        if session
            .get_keepalive()
            .is_some_and(|k| k != limits.idle_secs)
        {
            session.set_keepalive(Some(limits.idle_secs));
        }
        let downstream = session.as_downstream();
        let raw = || downstream.to_h1_raw();
        if let Some(why) = headers::framing_error(session.req_header(), raw)
            .or_else(|| headers::target_error(session.req_header()))
        {
            return Error::e_explain(ErrorType::HTTPStatus(400), why);
        }
        if session.as_downstream().to_h1_raw().len() > limits.max_header_size {
            return Error::e_explain(ErrorType::HTTPStatus(431), "request head too large");
        }
        let too_long = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > limits.max_body);
        if too_long {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than max_body",
            );
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        #[cfg(feature = "fault-injection")]
        crate::fault::maybe_panic(req);
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let Some(idx) = self.router.load().route(host, req.uri.path()) else {
            self.unrouted.inc();
            respond_text(session, 404, "forkyard: no route matches this request\n").await?;
            return Ok(true);
        };
        let Some(pool) = self.pools.get(idx) else {
            // The router is built over `pools`; this is a bug, answered, not a panic.
            respond_text(session, 500, "forkyard: route to a missing pool\n").await?;
            return Ok(true);
        };
        ctx.pool = Some(idx);
        let table = pool.table();
        if table.entries.is_empty() {
            respond_text(session, 503, "forkyard: no ready worker in this pool\n").await?;
            return Ok(true);
        }
        if let LbPolicy::Hash(key) = &table.upstream().lb {
            ctx.hash_key = headers::hash_key(req, key, client_ip(session));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            if let Some(lease) = &ctx.current {
                lease.progress();
            }
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.settings.load().client.max_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body larger than max_body",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .and_then(|i| self.pools.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no pool"))?;
        if let Some(prev) = ctx.current.take() {
            ctx.tried.push(prev.entry().member.id);
        }
        let mut lease = match pool.admit(&ctx.tried, ctx.hash_key).await {
            Ok(lease) => lease,
            Err(refusal) => {
                ctx.refusal = Some(refusal);
                return Error::e_explain(
                    ErrorType::HTTPStatus(refusal.status()),
                    "no worker for this request",
                );
            }
        };
        if ctx.attempts > 0 {
            pool.requests.retries.inc();
        }
        ctx.attempts += 1;
        ctx.last_worker = Some(lease.entry().member.slot.index());
        if pool.table().settings.hang.is_some() {
            let req = session.req_header();
            let id = match req.headers.get(headers::X_REQUEST_ID) {
                Some(v) => v,
                // The same id `upstream_request_filter` sends.
                None => &*ctx.request_id.get_or_insert_with(headers::new_request_id),
            };
            lease.watch(
                req.method.as_str(),
                req.uri.path(),
                id.to_str().unwrap_or("-"),
            );
        }
        let peer = lease.entry().peer();
        ctx.current = Some(lease);
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(pool) = self.pool(ctx) {
            pool.requests.connect_errors.inc();
            if let Some(l) = &ctx.current {
                pool.record(l.entry(), true);
            }
            // Nothing reached the worker, so any method may go to another one.
            e.set_retry(ctx.attempts <= pool.table().upstream().retries);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
        headers::set_forwarded(upstream, client_ip(session), host, |ip| {
            front::with_conn(|c| {
                c.forwarded_for
                    .get_or_init(|| headers::ip_value(ip))
                    .clone()
            })
            .unwrap_or_else(|| headers::ip_value(ip))
        })?;
        if !upstream.headers.contains_key(headers::X_REQUEST_ID) {
            let id = ctx
                .request_id
                .get_or_insert_with(headers::new_request_id)
                .clone();
            upstream.insert_header(headers::X_REQUEST_ID, id)?;
        }
        upstream.insert_header("x-request-start", format!("t={}", ctx.start_us))?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status >= 200 || status == 101 {
            if let Some(lease) = &ctx.current {
                lease.answered();
            }
        }
        if status < 200 {
            return Ok(());
        }
        if let (Some(pool), Some(l)) = (self.pool(ctx), &ctx.current) {
            pool.record(l.entry(), status >= 500);
            let table = pool.table();
            if table.upstream().retry_on.status(status) && may_retry(session, ctx, &table) {
                ctx.retry_response = true;
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    "retrying on another worker",
                );
            }
        }
        headers::strip_hop_by_hop(resp);
        Ok(())
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_response) {
            e.set_retry(true);
            return e;
        }
        if ctx.current.as_ref().is_some_and(Lease::hung) {
            // Counted as hung: answered 504, never sent to another worker.
            ctx.hung = true;
            e.set_retry(false);
            return e;
        }
        let Some(pool) = self.pool(ctx) else {
            e.set_retry(false);
            return e;
        };
        let table = pool.table();
        let policy = table.upstream();
        let head_timeout = e.etype == ErrorType::ReadTimedout
            && e.esource == ErrorSource::Upstream
            && session.response_written().is_none();
        if head_timeout {
            if let Some(l) = &ctx.current {
                pool.record(l.entry(), true);
            }
            e.set_retry(policy.retry_on.timeout && may_retry(session, ctx, &table));
            return e;
        }
        // The worker reset or closed the connection before any of its answer reached
        // the client (it died, or stopped listening with the connection in its
        // backlog): an idempotent request goes to another worker, as nginx's
        // `proxy_next_upstream error` does.
        // (Unlike `may_retry`, no check for an untried ready worker: there is no
        // answer to fall back on, and `upstream_peer` answers 502 when none is left.)
        let resend = e.esource == ErrorSource::Upstream
            && ctx.attempts <= policy.retries
            && session.req_header().method.is_idempotent()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated();
        if resend {
            if let Some(l) = &ctx.current {
                pool.record(l.entry(), true);
            }
            e.set_retry(true);
            return e;
        }
        // Pingora's default: a failure on a reused keep-alive connection (the
        // worker closed it) is retried for idempotent requests; nothing else is.
        if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.attempts > policy.retries
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        use ErrorType::*;
        let code = match (e.etype(), e.esource()) {
            _ if ctx.hung => 504,
            (HTTPStatus(code), _) => *code,
            (ConnectTimedout, _) => 504,
            (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
            (_, ErrorSource::Upstream) => 502,
            (
                WriteError | ReadError | ConnectionClosed | ReadTimedout | WriteTimedout,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0
            && session.response_written().is_none()
            && ctx.refusal.is_some_and(|r| r.retry_after())
        {
            // The queue was full or the wait timed out: say when to come back.
            let answered = async {
                let mut header = ResponseHeader::build(code, Some(3))?;
                header.insert_header("retry-after", "1")?;
                header.insert_header("content-length", "0")?;
                session.write_response_header(Box::new(header), true).await
            };
            if let Err(err) = answered.await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        } else if code > 0 && session.response_written().is_none() {
            if let Err(err) = session.respond_error(code).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let _ = front::with_conn(|c| c.request_done());
        if let (None, Some(lease)) = (e, ctx.current.take()) {
            lease.entry().member.served();
        }
        ctx.current = None;
        let Some(pool) = self.pool(ctx) else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        pool.requests.record(status, elapsed.as_secs_f64());
        if let Some(log) = &*self.access_log.load() {
            let req = session.req_header();
            let id = req
                .headers
                .get(headers::X_REQUEST_ID)
                .or(ctx.request_id.as_ref())
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            log.log(&access_log::Entry {
                client: client_ip(session),
                method: req.method.as_str(),
                target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
                version: req.version,
                status,
                bytes: session.body_bytes_sent(),
                duration_us: elapsed.as_micros() as u64,
                pool: &pool.name,
                worker: ctx.last_worker,
                attempts: ctx.attempts,
                request_id: id,
            });
        }
    }
}

/// Answer with a short plain-text body.
async fn respond_text(session: &mut Session, status: u16, body: &'static str) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("content-length", body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}
