//! `GET /events`: the lifecycle events as Server-Sent Events, live.
//!
//! Each message is `id: <seq>`, `event: <event name>` and `data: <the JSON log
//! object>`, one line each. A comment (`: keep-alive`) goes out every
//! [`HEARTBEAT`], so proxies keep the connection and a reader can tell a quiet
//! forkyard from a dead one. When forkyard stops, the stream ends with
//! `event: end` (`data: {"reason":"shutdown"}`) and the connection closes.
//!
//! A new subscriber may ask for kept events first: `?replay=N` (the last N, at most
//! 1024), or `Last-Event-ID` (every kept event after that id; EventSource sends it
//! when it reconnects).
//!
//! A subscriber never slows forkyard: the feed does not wait for it (see
//! `events::hub`). One that falls more than 1024 events behind, or whose socket
//! takes a write for longer than [`WRITE_DEADLINE`] (it stopped reading, and the
//! socket's send buffer, kept small, is full), is cut off and counted in
//! `forkyard_events_subscribers_dropped_total`.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use crate::events::hub::{Event, Hub, Replay, KEEP};
use crate::metrics::Metrics;

/// How often a quiet stream carries a comment.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long one write may wait for the subscriber's socket.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// At most this much is written at once when events pile up.
const BATCH_BYTES: usize = 64 * 1024;
/// How long EventSource waits before it reconnects.
const RETRY_MS: u32 = 2000;
/// The kernel's send buffer for a stream's socket (Linux doubles it). Left alone,
/// loopback grows it to 4 MiB, and a client that stopped reading would be noticed
/// only after that much; with this it is noticed after tens of KiB.
const SEND_BUFFER: usize = 16 * 1024;

/// Bound the send buffer of `http`'s socket (see [`SEND_BUFFER`]).
fn bound_send_buffer(http: &ServerSession) {
    use std::os::fd::AsRawFd;
    let fd = http
        .stream()
        .and_then(|s| {
            s.as_any()
                .downcast_ref::<pingora::protocols::l4::stream::Stream>()
        })
        .map(|s| s.as_raw_fd());
    if let Some(fd) = fd {
        if let Err(e) = pingora::protocols::l4::ext::set_snd_buf(fd, SEND_BUFFER) {
            tracing::debug!(error = %e, "event stream: could not bound the send buffer");
        }
    }
}

/// The replay a request asks for: `?replay=N`, or its `Last-Event-ID` header, which
/// wins (a reconnecting EventSource sends both).
pub(crate) fn replay(query: Option<&str>, last_event_id: Option<&[u8]>) -> Result<Replay, String> {
    if let Some(id) = last_event_id
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Ok(Replay::After(id));
    }
    let mut replay = Replay::Nothing;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("replay", n)) => match n.parse::<usize>() {
                Ok(n) if n <= KEEP => replay = Replay::Last(n),
                _ => {
                    return Err(format!(
                        "replay={n}: expected a number of events, 0 to {KEEP}"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "unknown parameter {pair:?}; GET /events takes ?replay=N"
                ))
            }
        }
    }
    Ok(replay)
}

/// One SSE message.
fn frame(out: &mut Vec<u8>, event: &Event) {
    // Names are constants of `events`; a line break would end the field early.
    let name = event.name.replace(['\r', '\n'], " ");
    out.extend_from_slice(
        format!("id: {}\nevent: {name}\ndata: {}\n\n", event.seq, event.json).as_bytes(),
    );
}

/// Why a stream ended early.
enum Cut {
    /// The subscriber went away (the write failed).
    Gone,
    /// A write waited past the deadline.
    Stalled,
}

async fn write(http: &mut ServerSession, bytes: Vec<u8>) -> Result<(), Cut> {
    match tokio::time::timeout(
        WRITE_DEADLINE,
        http.write_response_body(Bytes::from(bytes), false),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Cut::Gone),
        Err(_) => Err(Cut::Stalled),
    }
}

/// Counts an open stream, in the gauge and for the shutdown's wait, while it lives.
struct Open<'a> {
    metrics: &'a Metrics,
    streams: &'a watch::Sender<usize>,
}

impl<'a> Open<'a> {
    fn new(metrics: &'a Metrics, streams: &'a watch::Sender<usize>) -> Open<'a> {
        metrics.events_subscribers.inc();
        streams.send_modify(|n| *n += 1);
        Open { metrics, streams }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.metrics.events_subscribers.dec();
        self.streams.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serve the stream on `http` (whose request was `GET /events`) until forkyard
/// stops (`shutdown`), the subscriber goes away, or it is cut off.
pub(crate) async fn stream(
    hub: &Hub,
    metrics: &Metrics,
    streams: &watch::Sender<usize>,
    http: &mut ServerSession,
    replay: Replay,
    mut shutdown: ShutdownWatch,
) {
    bound_send_buffer(http);
    let (past, mut rx) = hub.subscribe(replay);
    let _open = Open::new(metrics, streams);
    let dropped = |reason: &str| {
        metrics
            .events_subscribers_dropped
            .with_label_values(&[reason])
            .inc();
        tracing::debug!(reason, "event stream subscriber cut off");
    };
    let Ok(mut header) = ResponseHeader::build(200, Some(4)) else {
        return;
    };
    for (name, value) in [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-store"),
        // nginx in front: pass each message on at once.
        ("x-accel-buffering", "no"),
    ] {
        if header.insert_header(name, value).is_err() {
            return;
        }
    }
    match tokio::time::timeout(WRITE_DEADLINE, http.write_response_header(Box::new(header))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return,
        Err(_) => return dropped("stalled"),
    }
    let mut first = format!(
        "retry: {RETRY_MS}\n: forkyard {} lifecycle events\n\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    for event in &past {
        frame(&mut first, event);
    }
    if let Err(cut) = write(http, first).await {
        if matches!(cut, Cut::Stalled) {
            dropped("stalled");
        }
        return;
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = *shutdown.borrow();
    loop {
        let mut out = Vec::new();
        if stopping {
            // Whatever was published before the stop (`shutdown_complete`) first.
            while let Ok(event) = rx.try_recv() {
                frame(&mut out, &event);
            }
            out.extend_from_slice(b"event: end\ndata: {\"reason\":\"shutdown\"}\n\n");
            let _ = write(http, out).await;
            return;
        }
        tokio::select! {
            // Events before the stop, so none published before it is lost.
            biased;
            received = rx.recv() => match received {
                Ok(event) => {
                    frame(&mut out, &event);
                    while out.len() < BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(event) => frame(&mut out, &event),
                            Err(TryRecvError::Lagged(_)) => return dropped("lagged"),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => return dropped("lagged"),
                Err(RecvError::Closed) => return,
            },
            changed = shutdown.changed() => {
                stopping = changed.is_err() || *shutdown.borrow();
                continue;
            }
            _ = heartbeat.tick() => out.extend_from_slice(b": keep-alive\n\n"),
        }
        match write(http, out).await {
            Ok(()) => {}
            Err(Cut::Stalled) => return dropped("stalled"),
            Err(Cut::Gone) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_from_the_query_or_the_last_event_id() {
        assert_eq!(replay(None, None), Ok(Replay::Nothing));
        assert_eq!(replay(Some("replay=50"), None), Ok(Replay::Last(50)));
        assert_eq!(
            replay(Some("replay=50"), Some(b"17")),
            Ok(Replay::After(17)),
            "a reconnecting EventSource sends both"
        );
        assert_eq!(replay(None, Some(b" 3 ")), Ok(Replay::After(3)));
        assert_eq!(replay(None, Some(b"x")), Ok(Replay::Nothing));
        assert!(replay(Some("replay=5000"), None)
            .unwrap_err()
            .contains("0 to 1024"));
        assert!(replay(Some("replay=-1"), None).is_err());
        assert!(replay(Some("since=3"), None)
            .unwrap_err()
            .contains("unknown parameter"));
    }

    #[test]
    fn a_message_is_id_event_and_one_data_line() {
        let mut out = Vec::new();
        frame(
            &mut out,
            &Event {
                seq: 7,
                name: "spawn".into(),
                json: r#"{"event":"spawn","pool":"web"}"#.into(),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 7\nevent: spawn\ndata: {\"event\":\"spawn\",\"pool\":\"web\"}\n\n"
        );
    }
}
