//! The bearer token of the control endpoints: its one owner, which a reload
//! replaces (`admin.token`, or `admin.token_file` read again). The token is
//! compared in constant time.

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

    /// Whether a request with this `Authorization` header may change things.
    pub(crate) fn allows(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let guard = self.token.read();
        let Some(token) = guard.as_ref() else {
            return true;
        };
        let Some(value) = authorization.map(|v| v.as_bytes()) else {
            return false;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let credentials = match value.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
            _ => return false,
        };
        token.matches(credentials.trim_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn bearer_tokens() {
        let open = AdminAuth::new(None);
        assert!(open.allows(None));
        let auth = AdminAuth::new(Some(Secret::new("0123456789abcdef".into())));
        assert!(!auth.allows(None));
        assert!(auth.allows(Some(&header("Bearer 0123456789abcdef"))));
        assert!(auth.allows(Some(&header("bearer  0123456789abcdef "))));
        assert!(!auth.allows(Some(&header("Bearer 0123456789abcdeF"))));
        assert!(!auth.allows(Some(&header("Bearer 0123456789abcde"))));
        assert!(!auth.allows(Some(&header("Basic 0123456789abcdef"))));
        assert!(!auth.allows(Some(&header("Bearer"))));
        assert!(!auth.allows(Some(&header("0123456789abcdef"))));
        auth.set(Some(Secret::new("fedcba9876543210".into())));
        assert!(auth.allows(Some(&header("Bearer fedcba9876543210"))));
        assert!(!auth.allows(Some(&header("Bearer 0123456789abcdef"))));
    }
}
