//! Retries: connect failures go to another worker for any method; bad responses
//! are retried only for idempotent requests.

use crate::harness::*;

#[test]
fn a_worker_that_refuses_connections_gives_no_client_errors() {
    let pool = proxy_fixture_pool("web", 3, "");
    let port = first_port(&pool);
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 3);
    // Slot 1 stays "ready" but stops accepting, before the proxy ever used it.
    let refusing: std::net::SocketAddr = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    http_get(refusing, "/close-listener", &[]).expect("close the listener");
    wait_for(SHORT, "slot 1 to refuse connections", || {
        std::net::TcpStream::connect(refusing)
            .is_err()
            .then_some(())
    });
    for i in 0..60 {
        let r = fy.get("/").expect("request");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_ne!(r.json()["slot"], "1");
    }
    let errors = fy
        .metric(r#"forkyard_upstream_connect_errors_total{pool="web"}"#)
        .unwrap();
    assert!(errors >= 1.0, "the refusing worker was tried: {errors}");
    assert!(fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap() >= 1.0);
}

#[test]
fn bad_responses_are_retried_for_get_but_a_post_is_never_retried_once_sent() {
    let extra = "    retry_on: [503]\n    eject: { consecutive_failures: 0 }\n    env: { FIXTURE_FAIL_SLOT: \"1\" }\n";
    let fy = Forkyard::start(&config_with(&[proxy_fixture_pool("web", 2, extra)], ""));
    fy.wait_workers_ready("web", 2);
    let retries = || fy.metric(r#"forkyard_retries_total{pool="web"}"#).unwrap();
    for _ in 0..10 {
        let r = fy.get("/flaky").unwrap();
        assert_eq!(
            r.status, 200,
            "a GET answered 503 is retried elsewhere: {r:?}"
        );
    }
    let after_gets = retries();
    assert!(after_gets >= 4.0, "GETs were retried: {after_gets}");

    let mut failed = 0;
    for _ in 0..10 {
        let r = http_request(fy.proxy, "POST", "/flaky", &[], b"payload").unwrap();
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        failed += usize::from(r.status == 503);
    }
    assert!(
        failed >= 4,
        "POSTs to the failing worker got its 503: {failed}"
    );
    assert_eq!(retries(), after_gets, "no POST was retried");
}
