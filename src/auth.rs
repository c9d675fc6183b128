//! The bearer token of the control endpoints on the TCP admin listener: its one
//! owner, which a reload replaces (`admin.token`, or `admin.token_file` read
//! again). The token is compared in constant time.

use std::sync::Arc;

use crate::config::Secret;

/// The bearer token of the POST endpoints; replaced at reload when
/// `admin.token_file` changed.
pub(crate) struct AdminAuth {
    token: parking_lot::RwLock<Option<Secret>>,
}

impl AdminAuth {
    pub(crate) fn new(token: Option<Secret>) -> Arc<AdminAuth> {
        Arc::new(AdminAuth {
            token: parking_lot::RwLock::new(token),
        })
    }

    pub(crate) fn set(&self, token: Option<Secret>) {
        *self.token.write() = token;
    }

    /// Whether a token is set.
    pub(crate) fn is_set(&self) -> bool {
        self.token.read().is_some()
    }

    /// What the token says of a request with this `Authorization` header.
    pub(crate) fn verdict(&self, authorization: Option<&http::HeaderValue>) -> Verdict {
        let guard = self.token.read();
        let Some(token) = guard.as_ref() else {
            return Verdict::NoToken;
        };
        let Some(value) = authorization.map(|v| v.as_bytes()) else {
            return Verdict::Wrong;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let credentials = match value.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
            _ => return Verdict::Wrong,
        };
        if token.matches(credentials.trim_ascii()) {
            Verdict::Valid
        } else {
            Verdict::Wrong
        }
    }
}

/// A request's bearer token against the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No token is set: the listener's own rule decides.
    NoToken,
    Valid,
    /// Missing, malformed or different.
    Wrong,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn bearer_tokens() {
        use Verdict::*;
        let open = AdminAuth::new(None);
        assert_eq!(open.verdict(None), NoToken);
        assert_eq!(open.verdict(Some(&header("Bearer x"))), NoToken);
        let auth = AdminAuth::new(Some(Secret::new("0123456789abcdef".into())));
        assert_eq!(auth.verdict(None), Wrong);
        assert_eq!(
            auth.verdict(Some(&header("Bearer 0123456789abcdef"))),
            Valid
        );
        assert_eq!(
            auth.verdict(Some(&header("bearer  0123456789abcdef "))),
            Valid
        );
        for wrong in [
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcde",
            "Basic 0123456789abcdef",
            "Bearer",
            "0123456789abcdef",
        ] {
            assert_eq!(auth.verdict(Some(&header(wrong))), Wrong, "{wrong}");
        }
        auth.set(Some(Secret::new("fedcba9876543210".into())));
        assert_eq!(
            auth.verdict(Some(&header("Bearer fedcba9876543210"))),
            Valid
        );
        assert_eq!(
            auth.verdict(Some(&header("Bearer 0123456789abcdef"))),
            Wrong
        );
        auth.set(None);
        assert_eq!(auth.verdict(None), NoToken);
    }
}
