//! Validation of `admin:`: the listen address, the bearer token of the POST
//! endpoints (`token`, or `token_file`, which is read here, so a missing or empty
//! file is a config error with its location, at start-up and at reload alike), and
//! the control socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::location::KeyPath;
use super::model::*;
use super::raw::*;
use super::validate::{Checker, Listener};

const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// Shorter tokens are guessable; 16 characters of `openssl rand -hex` are 64 bits.
const MIN_TOKEN_LEN: usize = 16;
const TOKEN_HINT: &str = "e.g. the output of `openssl rand -hex 32`";
/// `sun_path` holds 108 bytes, the last one a NUL.
const MAX_SOCKET_PATH: usize = 107;

impl Checker<'_> {
    pub(super) fn admin(
        &mut self,
        raw: RawAdmin,
        path: &KeyPath,
    ) -> (AdminConfig, Option<Listener>) {
        let listen_path = path.key("listen");
        let addr = match raw.listen {
            None if self.poisoned(&listen_path) => None,
            None => Some(DEFAULT_ADMIN_LISTEN),
            Some(scalar) => self.address(&scalar, &listen_path),
        };
        let (token, token_file) = self.admin_token(raw.token, raw.token_file, path);
        let socket = self.control_socket(raw.socket, &path.key("socket"));
        let config = AdminConfig {
            listen: addr.unwrap_or(DEFAULT_ADMIN_LISTEN),
            token,
            token_file,
            socket,
        };
        let listener = addr.map(|addr| Listener {
            path: listen_path,
            addr,
        });
        (config, listener)
    }

    fn admin_token(
        &mut self,
        token: Option<String>,
        token_file: Option<String>,
        path: &KeyPath,
    ) -> (Option<Secret>, Option<PathBuf>) {
        match (token, token_file) {
            (None, None) => (None, None),
            (Some(_), Some(_)) => {
                self.error(
                    &path.key("token_file"),
                    "set admin.token or admin.token_file, not both",
                );
                (None, None)
            }
            (Some(token), None) => {
                let ok = self.token_text(&token, &path.key("token"), "token");
                (ok.then(|| Secret::new(token)), None)
            }
            (None, Some(file)) => {
                let file_path = path.key("token_file");
                if file.is_empty() {
                    self.error(&file_path, "token_file must not be empty (a file path)");
                    return (None, None);
                }
                let file = PathBuf::from(file);
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        let token = text.trim();
                        let what = format!("the token in {}", file.display());
                        let ok = self.token_text(token, &file_path, &what);
                        (ok.then(|| Secret::new(token.to_owned())), Some(file))
                    }
                    Err(e) => {
                        self.error(
                            &file_path,
                            format!("cannot read token_file {}: {e}", file.display()),
                        );
                        (None, Some(file))
                    }
                }
            }
        }
    }

    /// `admin.socket`: `false`, `true` (the default place) or an absolute path that
    /// fits in a socket address.
    fn control_socket(&mut self, raw: Option<Scalar>, path: &KeyPath) -> ControlSocket {
        let Some(scalar) = raw else {
            return ControlSocket::Default;
        };
        let text = self.text(&scalar, path);
        match (scalar.typed, text.as_str()) {
            (true, "false") => return ControlSocket::Off,
            (true, "true") => return ControlSocket::Default,
            _ => {}
        }
        let hint = r#"expected an absolute path such as "/run/forkyard/forkyard.sock", or false for no control socket"#;
        if scalar.typed || !text.starts_with('/') || text.ends_with('/') {
            self.error(path, format!("invalid socket path {text:?} ({hint})"));
            return ControlSocket::Default;
        }
        if text.len() > MAX_SOCKET_PATH {
            self.error(
                path,
                format!(
                    "socket path {text:?} is {} bytes; a unix socket path has at most {MAX_SOCKET_PATH}",
                    text.len()
                ),
            );
            return ControlSocket::Default;
        }
        ControlSocket::Path(PathBuf::from(text))
    }

    /// Whether `token` is usable in an `Authorization` header and long enough. The
    /// messages never quote the token.
    fn token_text(&mut self, token: &str, path: &KeyPath, what: &str) -> bool {
        if token.is_empty() {
            self.error(path, format!("{what} is empty ({TOKEN_HINT})"));
            return false;
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            self.error(
                path,
                format!("{what} must be visible ASCII characters without spaces ({TOKEN_HINT})"),
            );
            return false;
        }
        if token.len() < MIN_TOKEN_LEN {
            self.error(
                path,
                format!(
                    "{what} is {} characters; use at least {MIN_TOKEN_LEN} ({TOKEN_HINT})",
                    token.len()
                ),
            );
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::load_from_str;

    const POOL: &str = "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n";

    fn env(name: &str) -> Option<String> {
        (name == "ADMIN_TOKEN").then(|| "0123456789abcdef0123".to_string())
    }

    fn load(admin: &str) -> Result<crate::config::Config, String> {
        load_from_str(
            &format!("admin:\n{admin}{POOL}"),
            Path::new("config.yaml"),
            &env,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn no_token_by_default_and_loopback() {
        let c = load("  listen: 127.0.0.1:9090\n").unwrap();
        assert!(c.admin.listen.ip().is_loopback());
        assert_eq!(c.admin.token, None);
    }

    #[test]
    fn inline_token_from_the_environment() {
        let c = load("  token: \"${ADMIN_TOKEN}\"\n").unwrap();
        let token = c.admin.token.unwrap();
        assert_eq!(token.expose(), "0123456789abcdef0123");
        assert!(!format!("{:?}", c.admin.token_file).contains("0123"));
    }

    #[test]
    fn bad_tokens_are_reported_without_their_value() {
        assert_eq!(
            load("  token: short\n").unwrap_err(),
            "config.yaml:2:10: admin.token: token is 5 characters; use at least 16 (e.g. the output of `openssl rand -hex 32`)"
        );
        let e = load("  token: \"with space with space\"\n").unwrap_err();
        assert!(
            e.contains("visible ASCII") && !e.contains("with space"),
            "{e}"
        );
        assert_eq!(
            load("  token: \"0123456789abcdef\"\n  token_file: /x\n").unwrap_err(),
            "config.yaml:3:15: admin.token_file: set admin.token or admin.token_file, not both"
        );
    }

    #[test]
    fn control_socket_is_a_path_false_or_the_default() {
        use crate::config::ControlSocket;
        assert_eq!(
            load("  listen: 127.0.0.1:9090\n").unwrap().admin.socket,
            ControlSocket::Default
        );
        assert_eq!(
            load("  socket: false\n").unwrap().admin.socket,
            ControlSocket::Off
        );
        assert_eq!(
            load("  socket: true\n").unwrap().admin.socket,
            ControlSocket::Default
        );
        assert_eq!(
            load("  socket: /run/app/forkyard.sock\n")
                .unwrap()
                .admin
                .socket,
            ControlSocket::Path("/run/app/forkyard.sock".into())
        );
        assert_eq!(
            load("  socket: run/forkyard.sock\n").unwrap_err(),
            r#"config.yaml:2:11: admin.socket: invalid socket path "run/forkyard.sock" (expected an absolute path such as "/run/forkyard/forkyard.sock", or false for no control socket)"#
        );
        assert!(load("  socket: 0\n")
            .unwrap_err()
            .contains("invalid socket path \"0\""));
        let long = format!("/{}", "x".repeat(107));
        let e = load(&format!("  socket: {long}\n")).unwrap_err();
        assert!(
            e.ends_with("is 108 bytes; a unix socket path has at most 107"),
            "{e}"
        );
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  0123456789abcdef-file\n").unwrap();
        let c = load(&format!("  token_file: {}\n", file.display())).unwrap();
        assert_eq!(c.admin.token.unwrap().expose(), "0123456789abcdef-file");
        assert_eq!(c.admin.token_file.as_deref(), Some(file.as_path()));

        std::fs::write(&file, "\n").unwrap();
        let e = load(&format!("  token_file: {}\n", file.display())).unwrap_err();
        assert!(
            e.ends_with("is empty (e.g. the output of `openssl rand -hex 32`)"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = load(&format!("  token_file: {}\n", missing.display())).unwrap_err();
        assert!(
            e.starts_with("config.yaml:2:15: admin.token_file: cannot read token_file "),
            "{e}"
        );
    }
}
