//! Load-balancing algorithms with real workers: least requests avoids a busy
//! worker; hashing keeps keys on their worker while another one restarts.
//! (Round robin's evenness is in `proxying.rs`.)

use std::collections::HashMap;

use crate::harness::*;

#[test]
fn least_requests_favours_the_idle_worker() {
    let fy = Forkyard::start(&config_with(
        &[fixture_pool("web", 2, "    lb: least_requests\n")],
        "",
    ));
    fy.wait_workers_ready("web", 2);
    let proxy = fy.proxy;
    let slow = std::thread::spawn(move || http_get(proxy, "/sleep?s=8", &[]));
    let in_flight = |w: usize| {
        fy.metric(&format!(
            r#"forkyard_worker_in_flight_requests{{pool="web",worker="{w}"}}"#
        ))
        .unwrap_or(0.0)
    };
    let busy = wait_for_or_log(&fy, SHORT, "the slow request to be in flight", || {
        (0..2).find(|w| in_flight(*w) == 1.0)
    });
    // Only requests sent while the slow one is still running count.
    let mut checked = 0;
    while checked < 10 {
        let slot = fy.slot_of("/", &[]);
        if in_flight(busy) != 1.0 {
            break; // the slow request ended meanwhile: this one proves nothing
        }
        assert_ne!(slot, busy, "a fast request went to the busy worker");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} fast requests fitted in 8s");
    let slow = slow.join().unwrap().expect("slow request").json();
    assert_eq!(slow["slot"], busy.to_string());
}

#[test]
fn hash_keys_stay_on_their_worker_while_another_restarts() {
    let pool = fixture_pool("web", 3, "    lb: { hash: { header: X-User } }\n");
    let port = first_port(&pool);
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 3);
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let map = |fy: &Forkyard| -> HashMap<String, usize> {
        users
            .iter()
            .map(|u| (u.clone(), fy.slot_of("/", &[("X-User", u)])))
            .collect()
    };
    let before = map(&fy);
    assert_eq!(before, map(&fy), "the same key goes to the same worker");
    assert_eq!(
        before
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3,
        "30 keys spread over all 3 workers: {before:?}"
    );

    let victim = before["user-0"];
    let restarted = r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#;
    let _ = http_get(
        format!("127.0.0.1:{}", port + victim as u16)
            .parse()
            .unwrap(),
        "/crash",
        &[],
    );
    wait_for_or_log(&fy, SHORT, "the crashed worker to be noticed", || {
        (fy.metric(restarted) >= Some(1.0)).then_some(())
    });
    let during = map(&fy);
    for (user, slot) in &before {
        if *slot != victim {
            assert_eq!(
                during[user], *slot,
                "{user} moved although its worker kept running"
            );
        }
    }
    fy.wait_workers_ready("web", 3);
    assert_eq!(map(&fy), before, "keys return to the restarted worker");
}
