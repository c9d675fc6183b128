//! Requests through the proxy reach every ready worker, get routed, and carry
//! X-Forwarded-* headers.

use std::collections::HashSet;

use crate::harness::*;

#[test]
fn requests_reach_all_workers_round_robin() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 4, "")], ""));
    fy.wait_ready();
    // /readyz needs one ready worker per pool; wait for all four.
    wait_for_or_log(&fy, BOOT, "4 ready workers", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#) == Some(4.0)).then_some(())
    });
    let mut slots = HashSet::new();
    let mut pids = HashSet::new();
    let mut per_slot = [0u32; 4];
    for _ in 0..40 {
        let r = fy.get("/").expect("request through the proxy");
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        let slot: usize = j["slot"].as_str().unwrap().parse().unwrap();
        per_slot[slot] += 1;
        slots.insert(slot);
        pids.insert(j["pid"].as_i64().unwrap());
        assert_eq!(j["pool"], "web");
    }
    assert_eq!(slots.len(), 4, "every slot answered: {per_slot:?}");
    assert_eq!(pids.len(), 4, "four distinct worker processes");
    assert!(
        per_slot.iter().all(|&n| n == 10),
        "round robin is even: {per_slot:?}"
    );
    // A request is counted once its answer is sent, so the last one may lag.
    wait_for_or_log(&fy, SHORT, "the 40 requests to be counted", || {
        (fy.metric(r#"forkyard_requests_total{code_class="2xx",pool="web"}"#)? >= 40.0)
            .then_some(())
    });
}

#[test]
fn forwarded_headers_are_set() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let r = http_get(
        fy.proxy,
        "/hdr",
        &[
            ("Host", "shop.example.com"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
}

#[test]
fn routes_pick_pools_and_unmatched_requests_get_404() {
    let routes = "routes:\n  - { host: \"api.example.com\", pool: api }\n  - { path_prefix: \"/web\", pool: web }\n";
    let fy = Forkyard::start(&config_with(
        &[fixture_pool("web", 1, ""), fixture_pool("api", 1, "")],
        routes,
    ));
    fy.wait_ready();
    let api = http_get(fy.proxy, "/web/x", &[("Host", "API.example.com:8080")]).unwrap();
    assert_eq!(api.json()["pool"], "api", "host route comes first");
    let web = http_get(fy.proxy, "/web/x", &[("Host", "other")]).unwrap();
    assert_eq!(web.json()["pool"], "web");
    let none = http_get(fy.proxy, "/webby", &[("Host", "other")]).unwrap();
    assert_eq!(none.status, 404, "{none:?}");
    assert!(none.body.contains("no route"), "{none:?}");
    assert_eq!(fy.metric("forkyard_unrouted_requests_total"), Some(1.0));
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_and_request_ids_are_set() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let r = http_get(
        fy.proxy,
        "/",
        &[
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-End-To-End", "1"),
        ],
    )
    .unwrap();
    let h = &r.json()["headers"];
    for hop in ["x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(h.get(hop).is_none(), "{hop} was forwarded: {h}");
    }
    assert_eq!(h["x-end-to-end"], "1");
    let id = h["x-request-id"]
        .as_str()
        .expect("a generated X-Request-Id");
    assert_eq!(id.len(), 16, "{id}");

    let r = http_get(fy.proxy, "/", &[("X-Request-Id", "abc-123")]).unwrap();
    assert_eq!(
        r.json()["headers"]["x-request-id"],
        "abc-123",
        "passed through"
    );

    let r = fy.get("/hop").unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-secret"), "{r:?}");
    assert!(!r.headers.contains_key("keep-alive"), "{r:?}");
    assert_eq!(r.headers.get("x-kept").map(String::as_str), Some("1"));
}
