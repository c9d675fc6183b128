//! Choosing a pool for a request: routes are tried in order, the first match wins.

use crate::config::Route;

/// A compiled route: lower-cased host, prefix, and the index of its pool.
#[derive(Debug, Clone)]
struct CompiledRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    pool: usize,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    routes: Vec<CompiledRoute>,
}

impl Router {
    /// Compile `routes`; `pool_index` maps a pool name to its index (validated already).
    pub(crate) fn new(routes: &[Route], pool_index: impl Fn(&str) -> Option<usize>) -> Router {
        let routes = routes
            .iter()
            .filter_map(|r| {
                Some(CompiledRoute {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.clone(),
                    pool: pool_index(&r.pool)?,
                })
            })
            .collect();
        Router { routes }
    }

    /// The router of `config`'s routes over its pools (by position).
    pub(crate) fn for_config(config: &crate::config::Config) -> Router {
        Router::new(&config.routes, |name| {
            config.pools.iter().position(|p| p.name == name)
        })
    }

    /// The pool index for a request with this Host header value and path.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && r.path_prefix
                        .as_deref()
                        .is_none_or(|p| prefix_matches(p, path))
            })
            .map(|r| r.pool)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, not `/apix`; `/api/` is a plain prefix.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    if prefix.ends_with('/') {
        return true;
    }
    matches!(
        path.as_bytes().get(prefix.len()),
        None | Some(b'/') | Some(b'?')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, pool: &str) -> Route {
        Route {
            host: host.map(String::from),
            path_prefix: prefix.map(String::from),
            pool: pool.into(),
        }
    }

    fn router() -> Router {
        let pools = ["api", "web", "static"];
        Router::new(
            &[
                route(Some("API.example.com"), Some("/v1"), "api"),
                route(None, Some("/static/"), "static"),
                route(Some("www.example.com"), None, "web"),
                route(None, Some("/health"), "web"),
            ],
            |n| pools.iter().position(|p| *p == n),
        )
    }

    #[test]
    fn first_match_wins_and_both_parts_must_match() {
        let r = router();
        assert_eq!(r.route(Some("api.example.com"), "/v1/users"), Some(0));
        assert_eq!(r.route(Some("api.example.com:8080"), "/v1"), Some(0));
        assert_eq!(r.route(Some("api.example.com"), "/v2"), None);
        assert_eq!(r.route(Some("x"), "/static/app.js"), Some(2));
        assert_eq!(r.route(Some("WWW.example.com"), "/anything"), Some(1));
        assert_eq!(r.route(None, "/health"), Some(1));
        assert_eq!(r.route(None, "/healthz"), None, "segment boundary");
        assert_eq!(r.route(None, "/health?full=1"), Some(1));
        assert_eq!(r.route(None, "/"), None);
    }

    #[test]
    fn catch_all_route() {
        let r = Router::new(&[route(None, None, "web")], |_| Some(0));
        assert_eq!(r.route(None, "/x"), Some(0));
        assert_eq!(r.route(Some("anything"), "/"), Some(0));
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
