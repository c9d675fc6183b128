//! Validation of a pool's `hang:`: `after` (required, shorter than the pool's
//! response-head timeout, or the request would be answered 504 before it counted as
//! hung), the `dump` argv and its placeholders or its signal, `dump_timeout`, and
//! `kill`.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::duration::show;
use super::location::KeyPath;
use super::model::*;
use super::placeholder::Scope;
use super::raw::*;
use super::validate::{parse_signal, Checker};

const DEFAULT_DUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `hang` is checked against.
pub(super) struct HangBounds {
    pub(super) bind: Bind,
    /// `timeouts.response_header`, and whether the file set it.
    pub(super) response_header: Duration,
    pub(super) response_header_given: bool,
}

impl Checker<'_> {
    pub(super) fn hang(
        &mut self,
        raw: Option<RawHang>,
        path: &KeyPath,
        bounds: HangBounds,
    ) -> Option<HangPolicy> {
        let raw = raw?;
        let after_path = path.key("after");
        let after = match raw.after {
            None => {
                if !self.poisoned(&after_path) {
                    self.missing(
                        &after_path,
                        r#"how long a request may wait for its response head before it counts as hung, e.g. "30s""#,
                    );
                }
                None
            }
            some => self.positive_duration(some, &after_path, Duration::ZERO),
        };
        if let Some(after) = after {
            if after >= bounds.response_header {
                let default = if bounds.response_header_given {
                    ""
                } else {
                    " (the default)"
                };
                self.error(
                    &after_path,
                    format!(
                        "hang.after {} is not shorter than timeouts.response_header {}{default}: the request would be answered 504 before it counted as hung (lower hang.after or raise timeouts.response_header)",
                        show(after),
                        show(bounds.response_header)
                    ),
                );
            }
        }
        let dump_path = path.key("dump");
        let dump = match raw.dump {
            None => None,
            Some(RawDump::Command(argv)) => {
                let argv = self.command(Some(argv), &dump_path);
                for (i, arg) in argv.iter().enumerate() {
                    self.placeholders(arg, &dump_path.index(i), Scope::Hang(bounds.bind));
                }
                Some(HangDump::Command(argv))
            }
            Some(RawDump::Map(map)) => {
                let signal_path = dump_path.key("signal");
                match map.signal {
                    None => {
                        if !self.poisoned(&signal_path) {
                            self.missing(&signal_path, "a signal name such as SIGUSR1");
                        }
                        None
                    }
                    Some(scalar) => {
                        let text = self.text(&scalar, &signal_path);
                        match parse_signal(&text) {
                            Ok(Signal::SIGKILL | Signal::SIGSTOP) => {
                                self.error(
                                    &signal_path,
                                    format!("{text} cannot be handled, so the worker could not dump anything (use a signal the app handles, e.g. SIGUSR1 with faulthandler.register)"),
                                );
                                None
                            }
                            Ok(signal) => Some(HangDump::Signal(signal)),
                            Err(message) => {
                                self.error(&signal_path, message);
                                None
                            }
                        }
                    }
                }
            }
        };
        let dump_timeout = self
            .positive_duration(
                raw.dump_timeout,
                &path.key("dump_timeout"),
                DEFAULT_DUMP_TIMEOUT,
            )
            .unwrap_or(DEFAULT_DUMP_TIMEOUT);
        Some(HangPolicy {
            after: after.unwrap_or(Duration::from_secs(30)),
            dump,
            dump_timeout,
            kill: raw.kill.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{load_from_str, HangDump, HangPolicy};

    const POOL: &str = "pools:\n  web:\n    command: [app, \"{port}\"]\n    ports: 9001-9010\n";

    fn load(extra: &str) -> Result<Option<HangPolicy>, String> {
        load_from_str(&format!("{POOL}{extra}"), Path::new("config.yaml"), &|_| {
            None
        })
        .map(|c| c.pools[0].hang.clone())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_both_dump_forms() {
        let h = load("    hang: { after: 30s }\n").unwrap().unwrap();
        assert_eq!(h.after, std::time::Duration::from_secs(30));
        assert_eq!(h.dump, None);
        assert_eq!(h.dump_timeout, std::time::Duration::from_secs(10));
        assert!(h.kill);
        let h =
            load("    hang: { after: 5s, dump: [py-spy, dump, --pid, \"{pid}\"], kill: false }\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            h.dump,
            Some(HangDump::Command(
                ["py-spy", "dump", "--pid", "{pid}"]
                    .map(String::from)
                    .into()
            ))
        );
        assert!(!h.kill);
        let h = load("    hang: { after: 5s, dump: { signal: USR1 }, dump_timeout: 2s }\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.dump,
            Some(HangDump::Signal(nix::sys::signal::Signal::SIGUSR1))
        );
        assert_eq!(load("").unwrap(), None, "off by default");
    }

    #[test]
    fn after_is_required_and_shorter_than_the_head_timeout() {
        assert_eq!(
            load("    hang: { kill: true }\n").unwrap_err(),
            r#"config.yaml:5:5: pools.web.hang.after: missing required key "after" (how long a request may wait for its response head before it counts as hung, e.g. "30s")"#
        );
        assert_eq!(
            load("    hang: { after: 60s }\n").unwrap_err(),
            "config.yaml:5:20: pools.web.hang.after: hang.after 1m is not shorter than timeouts.response_header 1m (the default): the request would be answered 504 before it counted as hung (lower hang.after or raise timeouts.response_header)"
        );
        let e =
            load("    hang: { after: 10s }\n    timeouts: { response_header: 5s }\n").unwrap_err();
        assert!(e.contains("timeouts.response_header 5s:"), "{e}");
        let e = load("    hang: { after: 0s }\n").unwrap_err();
        assert!(e.contains("after must be greater than 0"), "{e}");
    }

    #[test]
    fn dump_placeholders_and_signals_are_checked() {
        let e = load("    hang: { after: 5s, dump: [dumper, \"{prot}\"] }\n").unwrap_err();
        assert!(
            e.contains("pools.web.hang.dump[1]: unknown placeholder {prot}"),
            "{e}"
        );
        let e = load("    hang: { after: 5s, dump: [] }\n").unwrap_err();
        assert!(
            e.contains("pools.web.hang.dump: command must not be empty"),
            "{e}"
        );
        let e = load("    hang: { after: 5s, dump: { signal: SIGKILL } }\n").unwrap_err();
        assert!(e.contains("SIGKILL cannot be handled"), "{e}");
        let e = load("    hang: { after: 5s, dump: { signal: SIGUSR3 } }\n").unwrap_err();
        assert!(e.contains("unknown signal \"SIGUSR3\""), "{e}");
        let e = load("    hang: { after: 5s, dump: { sig: SIGUSR1 } }\n").unwrap_err();
        assert!(e.contains("unknown key \"sig\""), "{e}");
        let e = load("    hang: { after: 5s, dump: py-spy }\n").unwrap_err();
        assert!(e.contains("pools.web.hang.dump"), "{e}");
        let e = load_from_str(
            "pools:\n  web:\n    command: [app, \"{pid}\"]\n    ports: 9001-9010\n",
            Path::new("config.yaml"),
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("{pid} is only filled in hang.dump"), "{e}");
    }
}
