//! What the status page loads besides itself, built into the binary: its script
//! (`/page.js`: the charts, the live event log, the hang dumps) and its style sheet
//! (`/page.css`). forkyard usually runs where there is no network, and the page
//! must work there; so nothing comes from elsewhere, and the Content-Security-Policy
//! of the page says so to the browser: scripts, styles and fetches from forkyard
//! itself only, and no inline script at all.

use http::{HeaderValue, Response};

const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The policy of the page and its files.
pub(crate) const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The content type and body of the file at `path`, if it is one.
pub(crate) fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/page.js" => Some(("text/javascript; charset=utf-8", SCRIPT.as_bytes())),
        "/page.css" => Some(("text/css; charset=utf-8", STYLE.as_bytes())),
        _ => None,
    }
}

/// Add the page's security headers to `response`.
pub(crate) fn protect(response: &mut Response<Vec<u8>>) {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script listens for every lifecycle event by name (EventSource delivers
    /// a named event only to its own listener): each name in `events.rs` must be
    /// in its list.
    #[test]
    fn the_script_knows_every_event_name() {
        let events = include_str!("../events.rs");
        let names: Vec<&str> = events
            .lines()
            .filter(|l| l.starts_with("pub(crate) const ") && l.contains(": &str = \""))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(names.len() > 20, "{names:?}");
        let list = SCRIPT
            .split("const EVENT_NAMES = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .expect("EVENT_NAMES in page.js");
        for name in names {
            assert!(
                list.contains(&format!("'{name}'")),
                "page.js does not listen for {name}: add it to EVENT_NAMES"
            );
        }
    }

    #[test]
    fn the_page_allows_no_inline_script() {
        assert!(POLICY.contains("script-src 'self';"));
        assert!(!POLICY.contains("unsafe"));
        assert_eq!(
            get("/page.js").map(|f| f.0),
            Some("text/javascript; charset=utf-8")
        );
        assert!(get("/page.txt").is_none());
    }
}
