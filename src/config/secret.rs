//! Values that must not be shown: the admin token, and the rule that decides which
//! environment variables are secrets.

use std::fmt;

/// A secret string. Its `Debug` and `Display` never show the value, so a config
/// printed for debugging or logged does not leak it; `expose` is the one way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time that does not depend on where
    /// they differ (it does depend on the length).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// What is shown instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// Parts of an environment variable name that mark its value as a secret, matched
/// anywhere in the name, ignoring case. Deliberately broad: hiding a harmless
/// value (`KEYBOARD`) costs little, showing a password costs a lot.
const SECRET_MARKERS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
    "AUTH",
];

/// Whether the value of environment variable `name` is a secret and must not be
/// shown (`forkyard check`, logs).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// `value`, or [`REDACTED`] when `name` looks like a secret's.
pub fn shown<'a>(name: &str, value: &'a str) -> &'a str {
    if looks_secret(name) {
        REDACTED
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for name in [
            "API_TOKEN",
            "github_token",
            "DB_PASSWORD",
            "MYSQL_PASSWD",
            "AWS_SECRET_ACCESS_KEY",
            "SECRET",
            "STRIPE_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "Private_Pem",
            "BASIC_AUTH",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["APP_ENV", "PORT", "PYTHONPATH", "DATABASE_URL", "PWD"] {
            assert!(!looks_secret(name), "{name}");
        }
        assert_eq!(shown("API_TOKEN", "abc"), "<redacted>");
        assert_eq!(shown("APP_ENV", "prod"), "prod");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2hunter2hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        assert!(s.matches(b"hunter2hunter2hunter2"));
        assert!(!s.matches(b"hunter2hunter2hunter3"));
        assert!(!s.matches(b"hunter2"));
        assert!(!s.matches(b""));
    }
}
