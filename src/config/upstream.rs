//! Validation of the proxy-side keys: a pool's load balancing, retries, outlier
//! ejection, upstream timeouts and keep-alive, plus the size and timeout helpers the
//! `proxy` section uses.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::duration::show;
use super::error::with_suggestion;
use super::location::KeyPath;
use super::model::{
    Buffering, EjectPolicy, HashKey, LbPolicy, QueuePolicy, RetryOn, UpstreamPolicy,
};
use super::raw::{RawBuffer, RawEject, RawLb, RawQueue, RawSize, RawUpstreamTimeouts, Scalar};
use super::size::{parse_size, show_size};
use super::validate::Checker;

const SECOND: Duration = Duration::from_secs(1);

/// The pool keys this module checks, moved out of `RawPool`.
pub(super) struct UpstreamParts {
    pub lb: Option<RawLb>,
    pub weights: Option<Vec<u32>>,
    pub retries: Option<u32>,
    pub retry_on: Option<Vec<Scalar>>,
    pub eject: Option<RawEject>,
    pub timeouts: Option<RawUpstreamTimeouts>,
    pub keepalive: Option<usize>,
    pub buffer: Option<RawBuffer>,
    pub max_in_flight: Option<u32>,
    pub queue: Option<RawQueue>,
}

impl Checker<'_> {
    /// A positive duration, or `default` when absent or invalid (reported).
    pub(super) fn timeout_or(
        &mut self,
        raw: Option<super::raw::RawDuration>,
        path: &KeyPath,
        default: Duration,
    ) -> Duration {
        self.positive_duration(raw, path, default)
            .unwrap_or(default)
    }

    /// A size within `min..=max`, or `default` when absent or invalid (reported).
    pub(super) fn size_between(
        &mut self,
        raw: Option<RawSize>,
        path: &KeyPath,
        default: u64,
        (min, max): (u64, u64),
    ) -> u64 {
        let Some(RawSize(text)) = raw else {
            return default;
        };
        match parse_size(&text) {
            Ok(n) if n < min || n > max => {
                let key = path.last_key().unwrap_or_default();
                self.error(
                    path,
                    format!(
                        "{key} {text} is out of range (expected {} to {})",
                        show_size(min),
                        show_size(max)
                    ),
                );
                default
            }
            Ok(n) => n,
            Err(message) => {
                self.error(path, message);
                default
            }
        }
    }

    pub(super) fn upstream(
        &mut self,
        raw: UpstreamParts,
        pool: &KeyPath,
        workers: NonZeroUsize,
    ) -> UpstreamPolicy {
        let lb = self.lb(raw.lb, &pool.key("lb"));
        let weights = self.weights(raw.weights, &pool.key("weights"), workers);
        let retry_on = self.retry_on(raw.retry_on, &pool.key("retry_on"));
        let eject = self.eject(raw.eject, &pool.key("eject"));
        let t = raw.timeouts.unwrap_or_default();
        let tp = pool.key("timeouts");
        let keepalive = raw.keepalive.unwrap_or(32);
        if keepalive > 4096 {
            self.error(
                &pool.key("keepalive"),
                format!(
                    "keepalive {keepalive} is too large (at most 4096 idle connections per worker)"
                ),
            );
        }
        UpstreamPolicy {
            lb,
            weights,
            retries: raw.retries.unwrap_or(2).min(64),
            retry_on,
            eject,
            connect_timeout: self.timeout_or(t.connect, &tp.key("connect"), 5 * SECOND),
            response_header_timeout: self.timeout_or(
                t.response_header,
                &tp.key("response_header"),
                60 * SECOND,
            ),
            idle_timeout: self.timeout_or(t.idle, &tp.key("idle"), 60 * SECOND),
            keepalive: keepalive.min(4096),
            buffer: self.buffering(raw.buffer.unwrap_or_default(), &pool.key("buffer")),
            max_in_flight: match raw.max_in_flight {
                Some(0) => {
                    self.error(
                        &pool.key("max_in_flight"),
                        "max_in_flight must be at least 1 (leave it out for no limit)",
                    );
                    None
                }
                n => n,
            },
            queue: self.queue(raw.queue.unwrap_or_default(), &pool.key("queue")),
        }
    }

    fn buffering(&mut self, raw: RawBuffer, path: &KeyPath) -> Buffering {
        Buffering {
            request: self.size_between(raw.request, &path.key("request"), 1 << 20, (0, 1 << 30)),
            response: self.size_between(
                raw.response,
                &path.key("response"),
                64 << 10,
                (0, 1 << 30),
            ),
        }
    }

    fn queue(&mut self, raw: RawQueue, path: &KeyPath) -> QueuePolicy {
        QueuePolicy {
            max: raw.max.unwrap_or(1000).min(1 << 20),
            timeout: self.timeout_or(raw.timeout, &path.key("timeout"), 30 * SECOND),
        }
    }

    fn lb(&mut self, raw: Option<RawLb>, path: &KeyPath) -> LbPolicy {
        match raw {
            None => LbPolicy::RoundRobin,
            Some(RawLb::Name(name)) => match name.as_str() {
                named if LbPolicy::NAMED.iter().any(|(n, _)| *n == named) => LbPolicy::NAMED
                    .iter()
                    .find(|(n, _)| *n == named)
                    .map_or(LbPolicy::RoundRobin, |(_, p)| p.clone()),
                "hash" => {
                    self.error(
                        path,
                        "hash needs a key: write lb: { hash: { header: X-User } }, { hash: { cookie: sid } } or { hash: { client_ip: true } }",
                    );
                    LbPolicy::RoundRobin
                }
                other => {
                    let names: Vec<&str> = LbPolicy::NAMED.iter().map(|(n, _)| *n).collect();
                    let message = format!(
                        "unknown lb {other:?} (expected one of: {}, or {{ hash: {{ header: NAME }} }})",
                        names.join(", ")
                    );
                    let mut candidates = names;
                    candidates.push("hash");
                    self.error(path, with_suggestion(message, other, &candidates));
                    LbPolicy::RoundRobin
                }
            },
            Some(RawLb::Map(map)) => {
                let hash_path = path.key("hash");
                let Some(h) = map.hash else {
                    if !self.poisoned(&hash_path) {
                        self.error(path, "lb as a mapping needs hash: { header: NAME }, { cookie: NAME } or { client_ip: true }");
                    }
                    return LbPolicy::RoundRobin;
                };
                let mut keys = Vec::new();
                if let Some(name) = h.header {
                    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        self.error(
                            &hash_path.key("header"),
                            format!("invalid header name {name:?}"),
                        );
                    }
                    keys.push(HashKey::Header(name.to_ascii_lowercase()));
                }
                if let Some(name) = h.cookie {
                    if name.is_empty() || name.contains(['=', ';', ' ']) {
                        self.error(
                            &hash_path.key("cookie"),
                            format!("invalid cookie name {name:?}"),
                        );
                    }
                    keys.push(HashKey::Cookie(name));
                }
                match h.client_ip {
                    Some(true) => keys.push(HashKey::ClientIp),
                    Some(false) => self.error(
                        &hash_path.key("client_ip"),
                        "client_ip: false is not a key (use client_ip: true, or header/cookie)",
                    ),
                    None => {}
                }
                match keys.len() {
                    1 => LbPolicy::Hash(keys.remove(0)),
                    0 => {
                        if !self.touched(&hash_path) {
                            self.error(&hash_path, "hash must set one of header: NAME, cookie: NAME or client_ip: true");
                        }
                        LbPolicy::RoundRobin
                    }
                    _ => {
                        self.error(
                            &hash_path,
                            "hash must set exactly one of header, cookie or client_ip",
                        );
                        LbPolicy::RoundRobin
                    }
                }
            }
        }
    }

    fn weights(
        &mut self,
        raw: Option<Vec<u32>>,
        path: &KeyPath,
        workers: NonZeroUsize,
    ) -> Vec<u32> {
        let all_one = vec![1; workers.get()];
        let Some(weights) = raw else {
            return all_one;
        };
        if weights.len() != workers.get() {
            self.error(
                path,
                format!(
                    "weights has {} entries but workers is {workers} (give one weight per worker slot)",
                    weights.len()
                ),
            );
            return all_one;
        }
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 || *w > 1000 {
                self.error(
                    &path.index(i),
                    format!("weight {w} is out of range (1 to 1000)"),
                );
                return all_one;
            }
        }
        weights
    }

    fn retry_on(&mut self, raw: Option<Vec<Scalar>>, path: &KeyPath) -> RetryOn {
        let mut on = RetryOn::default();
        for (i, item) in raw.unwrap_or_default().iter().enumerate() {
            let item_path = path.index(i);
            let text = self.text(item, &item_path);
            match text.as_str() {
                "timeout" => on.timeout = true,
                t => match t.parse::<u16>() {
                    Ok(code @ 500..=599) => on.statuses |= 1u128 << (code - 500),
                    _ => self.error(
                        &item_path,
                        format!("cannot retry on {t:?} (expected 5xx status codes such as 502, 503, 504, or timeout)"),
                    ),
                },
            }
        }
        on
    }

    fn eject(&mut self, raw: Option<RawEject>, path: &KeyPath) -> Option<EjectPolicy> {
        let raw = raw.unwrap_or_default();
        let base_path = path.key("base_time");
        let max_path = path.key("max_time");
        let base = self.timeout_or(raw.base_time, &base_path, 10 * SECOND);
        let max = self.timeout_or(raw.max_time, &max_path, 300 * SECOND);
        if base > max {
            self.error(
                &base_path,
                format!(
                    "base_time {} is greater than max_time {}",
                    show(base),
                    show(max)
                ),
            );
        }
        let max_percent = raw.max_percent.unwrap_or(50);
        if max_percent > 100 {
            self.error(
                &path.key("max_percent"),
                format!("max_percent {max_percent} is out of range (0 to 100)"),
            );
        }
        let failures = raw.consecutive_failures.unwrap_or(5);
        (failures > 0).then_some(EjectPolicy {
            consecutive_failures: failures,
            base_time: base,
            max_time: max.max(base),
            max_percent: max_percent.min(100),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::{load_from_str, HashKey, LbPolicy};

    const POOL: &str =
        "pools:\n  web:\n    command: [app]\n    workers: 2\n    ports: \"9001-9002\"\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(extra: &str) -> Vec<String> {
        match load_from_str(&format!("{POOL}{extra}"), Path::new("c.yaml"), &no_env) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn full_upstream_section() {
        let yaml = format!(
            "{POOL}    lb: {{ hash: {{ header: X-User }} }}\n    weights: [1, 3]\n    retries: 1\n    retry_on: [502, 503, timeout]\n    eject: {{ consecutive_failures: 3, base_time: 1s, max_time: 5s, max_percent: 30 }}\n    timeouts: {{ connect: 100ms, response_header: 2s, idle: 9s }}\n    keepalive: 8\nproxy:\n  max_header_size: 16KiB\n  max_body: 1MB\n  client_header_timeout: 3s\nlog:\n  access: true\n"
        );
        let c = load_from_str(&yaml, Path::new("c.yaml"), &no_env).unwrap();
        let u = &c.pools[0].upstream;
        assert_eq!(u.lb, LbPolicy::Hash(HashKey::Header("x-user".into())));
        assert_eq!(u.weights, [1, 3]);
        assert_eq!(u.retries, 1);
        assert!(u.retry_on.status(502) && u.retry_on.status(503) && !u.retry_on.status(504));
        assert!(u.retry_on.timeout);
        let e = u.eject.unwrap();
        assert_eq!((e.consecutive_failures, e.max_percent), (3, 30));
        assert_eq!(u.connect_timeout, Duration::from_millis(100));
        assert_eq!(u.keepalive, 8);
        assert_eq!(c.proxy.max_header_size, 16 * 1024);
        assert_eq!(c.proxy.max_body, 1_000_000);
        assert_eq!(c.proxy.client_header_timeout, Duration::from_secs(3));
        assert!(c.log.access);
        let off = load_from_str(
            &format!("{POOL}    eject: {{ consecutive_failures: 0 }}\n    lb: least_requests\n"),
            Path::new("c.yaml"),
            &no_env,
        )
        .unwrap();
        assert_eq!(off.pools[0].upstream.eject, None);
        assert_eq!(off.pools[0].upstream.lb, LbPolicy::LeastRequests);
    }

    #[test]
    fn upstream_errors_have_locations() {
        assert_eq!(
            errors("    lb: round-robin\n"),
            [
                r#"c.yaml:6:9: pools.web.lb: unknown lb "round-robin" (expected one of: round_robin, least_requests, random, or { hash: { header: NAME } }); did you mean "round_robin"?"#
            ]
        );
        assert_eq!(
            errors("    lb: { hash: {} }\n"),
            ["c.yaml:6:11: pools.web.lb.hash: hash must set one of header: NAME, cookie: NAME or client_ip: true"]
        );
        assert_eq!(
            errors("    lb: { hash: { hedaer: x } }\n"),
            [
                r#"c.yaml:6:19: pools.web.lb.hash.hedaer: unknown key "hedaer" (expected one of: header, cookie, client_ip); did you mean "header"?"#
            ]
        );
        assert_eq!(
            errors("    weights: [1, 2, 3]\n"),
            ["c.yaml:6:5: pools.web.weights: weights has 3 entries but workers is 2 (give one weight per worker slot)"]
        );
        assert_eq!(
            errors("    retry_on: [503, 404]\n"),
            [
                r#"c.yaml:6:21: pools.web.retry_on[1]: cannot retry on "404" (expected 5xx status codes such as 502, 503, 504, or timeout)"#
            ]
        );
        assert_eq!(
            errors("    eject: { base_time: 10m }\n"),
            ["c.yaml:6:25: pools.web.eject.base_time: base_time 10m is greater than max_time 5m"]
        );
        assert_eq!(
            errors("    timeouts: { connect: 5 }\n"),
            [
                r#"c.yaml:6:26: pools.web.timeouts.connect: invalid duration 5 (expected e.g. "5s", "250ms", "1m"; bare numbers are not durations)"#
            ]
        );
        assert_eq!(
            errors("proxy:\n  max_body: 10 MiB\n  max_header_size: 1MiB\n"),
            [
                r#"c.yaml:7:13: proxy.max_body: invalid size "10 MiB" (expected e.g. "32KiB", "100MiB", "1GiB" or "512B"; bare numbers are not sizes)"#,
                "c.yaml:8:20: proxy.max_header_size: max_header_size 1MiB is out of range (expected 1KiB to 512KiB)",
            ]
        );
    }
}
