//! Worker placeholders: `{port}`, `{socket}`, `{worker}` and `{pool}`, filled for
//! each worker in its pool's `command` items and `env` values and in the `run:` argv
//! and `env` values of the pool's hooks; and `{pid}`, the worker's process, filled
//! only in `hang.dump`, which runs while the process does.
//!
//! One scanner serves both filling and checking, so what `check` accepts is exactly
//! what gets filled. A placeholder is `{name}` where `name` is an identifier (an ASCII
//! letter or `_`, then letters, digits or `_`). A name forkyard does not know is a
//! config error: it would otherwise reach the program as literal text (`{prot}`).
//! Every other brace is plain text and needs no escape: JSON such as `{"a":1}`,
//! `{0}`, `{ x }`, `a{3}`, and `${NAME}` (a variable for a shell or the app, written
//! `$${NAME}` in config.yaml). An app that needs the literal text `{name}` writes
//! `{{name}}`; that is the only escape.

use std::path::Path;

use super::error::suggest;
use super::location::KeyPath;
use super::model::{Bind, Phase};
use super::validate::Checker;

/// Every placeholder name, in the order messages list them.
const NAMES: [&str; 5] = ["port", "socket", "worker", "pool", "pid"];

/// The values of one worker's placeholders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placeholders<'a> {
    pub(crate) pool: &'a str,
    /// The slot number.
    pub(crate) worker: usize,
    /// `None` for `bind: unix` workers, which have no port.
    pub(crate) port: Option<u16>,
    /// `bind: unix` only: the worker's socket path.
    pub(crate) socket: Option<&'a Path>,
    /// The worker's process: known only once it runs (`hang.dump`).
    pub(crate) pid: Option<i32>,
}

impl Placeholders<'_> {
    /// `template` with every placeholder that has a value here filled in and every
    /// `{{name}}` turned into `{name}`. Anything else (which validation has refused
    /// where it could matter) stays as written.
    pub(crate) fn fill(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        for piece in Pieces::new(template) {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(name) => match self.value(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                },
            }
        }
        out
    }

    fn value(&self, name: &str) -> Option<String> {
        match name {
            "port" => self.port.map(|p| p.to_string()),
            "socket" => self.socket.map(|s| s.to_string_lossy().into_owned()),
            "worker" => Some(self.worker.to_string()),
            "pool" => Some(self.pool.to_owned()),
            "pid" => self.pid.map(|p| p.to_string()),
            _ => None,
        }
    }
}

/// One part of a template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Literal text (an escaped `{{name}}` comes out as `{name}`).
    Text(&'a str),
    /// `{name}`: the name, without braces.
    Placeholder(&'a str),
}

/// A template split into text and placeholders.
struct Pieces<'a> {
    template: &'a str,
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(template: &'a str) -> Self {
        Pieces { template, at: 0 }
    }

    /// The placeholder or escape starting at byte `i`, and where it ends. Braces and
    /// identifiers are ASCII, so every index here is a char boundary.
    fn token_at(&self, i: usize) -> Option<(Piece<'a>, usize)> {
        let s = self.template;
        let b = s.as_bytes();
        if b[i] != b'{' || (i > 0 && b[i - 1] == b'$') {
            return None;
        }
        if b.get(i + 1) == Some(&b'{') {
            let end = identifier_end(b, i + 2)?;
            return (b.get(end) == Some(&b'}') && b.get(end + 1) == Some(&b'}'))
                .then(|| (Piece::Text(&s[i + 1..end + 1]), end + 2));
        }
        let end = identifier_end(b, i + 1)?;
        (b.get(end) == Some(&b'}')).then(|| (Piece::Placeholder(&s[i + 1..end]), end + 1))
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let start = self.at;
        let len = self.template.len();
        if start >= len {
            return None;
        }
        let mut i = start;
        while i < len {
            if let Some((piece, end)) = self.token_at(i) {
                if i > start {
                    self.at = i;
                    return Some(Piece::Text(&self.template[start..i]));
                }
                self.at = end;
                return Some(piece);
            }
            i += 1;
        }
        self.at = len;
        Some(Piece::Text(&self.template[start..]))
    }
}

/// The end of the identifier that starts at `start`, if one does.
fn identifier_end(b: &[u8], start: usize) -> Option<usize> {
    let first = *b.get(start)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let len = b[start..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    Some(start + len)
}

/// Where a value is filled, which decides the placeholders it may use.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    /// For each worker of a pool (its command, env and hooks).
    Pool(Bind),
    /// Once, for no worker (`on_start`, `on_shutdown`): nothing is filled.
    Once(Phase),
    /// `hang.dump`: for one running worker, so its `{pid}` too.
    Hang(Bind),
}

impl Checker<'_> {
    /// A pool's `command` items and `env` values: every placeholder known, and a
    /// `bind: unix` pool tells its workers their `{socket}`.
    pub(super) fn pool_placeholders(
        &mut self,
        command: &[String],
        env: &[(String, String)],
        bind: Bind,
        path: &KeyPath,
    ) {
        let command_path = path.key("command");
        let env_path = path.key("env");
        let sites = command
            .iter()
            .enumerate()
            .map(|(i, a)| (command_path.index(i), a.as_str()))
            .chain(
                env.iter()
                    .map(|(k, v)| (env_path.key(k.as_str()), v.as_str())),
            );
        let mut socket_used = false;
        for (at, value) in sites {
            socket_used |= self.placeholders(value, &at, Scope::Pool(bind));
        }
        if bind == Bind::Unix && !socket_used && !command.is_empty() {
            self.error(
                &command_path,
                r#"bind: unix needs {socket} in the command or env, so the worker knows where to listen (e.g. ["gunicorn", "--bind", "unix:{socket}", "app:app"])"#,
            );
        }
    }

    /// Report every placeholder in `value` that would not be filled in `scope`.
    /// Returns whether `value` uses `{socket}`.
    pub(super) fn placeholders(&mut self, value: &str, at: &KeyPath, scope: Scope) -> bool {
        let mut socket_used = false;
        for piece in Pieces::new(value) {
            let Piece::Placeholder(name) = piece else {
                continue;
            };
            socket_used |= name == "socket";
            let scope = match (scope, name) {
                (Scope::Hang(_), "pid") => continue,
                (Scope::Hang(bind), _) => Scope::Pool(bind),
                (Scope::Pool(_), "pid") => {
                    self.error(
                        at,
                        "{pid} is only filled in hang.dump (a worker's command, env and hooks run before or after its process)",
                    );
                    continue;
                }
                _ => scope,
            };
            match (scope, name) {
                (Scope::Pool(Bind::Unix), "socket" | "worker" | "pool")
                | (Scope::Pool(Bind::Port | Bind::Inherit), "port" | "worker" | "pool") => {}
                (Scope::Pool(Bind::Unix), "port") => self.error(
                    at,
                    "bind: unix workers have no port: use {socket} (the worker's Unix socket path) instead of {port}",
                ),
                (Scope::Pool(_), "socket") => self.error(
                    at,
                    "{socket} is only set for bind: unix pools (this pool's workers listen on {port})",
                ),
                (Scope::Pool(bind), _) => {
                    let expected = if bind == Bind::Unix {
                        "{socket}, {worker} or {pool}"
                    } else {
                        "{port}, {worker} or {pool}"
                    };
                    let mut message = format!(
                        "unknown placeholder {{{name}}} (expected {expected}; write {{{{{name}}}}} for the literal text {{{name}}})"
                    );
                    if let Some(close) = closest(name) {
                        message.push_str(&format!("; did you mean \"{{{close}}}\"?"));
                    }
                    self.error(at, message);
                }
                // Text that only looks like a placeholder reaches the program as written.
                (Scope::Once(_), _) if !NAMES.contains(&name) => {}
                (Scope::Hang(_), _) => {}
                (Scope::Once(phase), _) => self.error(
                    at,
                    format!(
                        "{{{name}}} is not filled in {} hooks, which run once and not for a worker (placeholders are filled in the per-worker phases: pre_fork, post_fork, post_spawn, pre_stop, on_exit)",
                        phase.as_str()
                    ),
                ),
            }
        }
        socket_used
    }
}

/// The placeholder `name` was probably meant to be: the same in another case, or one
/// typo away.
fn closest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    NAMES
        .iter()
        .copied()
        .find(|n| *n == lower)
        .or_else(|| suggest(&lower, &NAMES))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load_from_str, Config, ConfigError};
    use super::*;

    fn pieces(s: &str) -> Vec<Piece<'_>> {
        Pieces::new(s).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(yaml: &str) -> Result<Config, Vec<ConfigError>> {
        load_from_str(yaml, Path::new("config.yaml"), &no_env).map_err(|e| e.0)
    }

    /// Every error of `yaml`, as displayed.
    fn errors(yaml: &str) -> Vec<String> {
        match load(yaml) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn pool(extra: &str) -> String {
        format!("pools:\n  web:\n    ports: \"9001\"\n{extra}")
    }

    const WORKER: Placeholders<'static> = Placeholders {
        pool: "web",
        worker: 2,
        port: Some(9003),
        socket: None,
        pid: None,
    };

    #[test]
    fn scanning_finds_identifiers_in_single_braces_only() {
        use Piece::*;
        assert_eq!(
            pieces("127.0.0.1:{port}"),
            [Text("127.0.0.1:"), Placeholder("port")]
        );
        assert_eq!(
            pieces("{pool}-{worker}"),
            [Placeholder("pool"), Text("-"), Placeholder("worker")]
        );
        assert_eq!(pieces("{{port}}"), [Text("{port}")]);
        assert_eq!(pieces("{_x9}"), [Placeholder("_x9")]);
        for text in [
            r#"{"a":1}"#,
            r#"{"port": {"b": [1]}}"#,
            "{0}",
            "{ port }",
            "{port",
            "port}",
            "{9x}",
            "a{3}",
            "${HOME}",
            "${port:-80}",
            "{}",
            "{",
            "",
            "{nä}",
        ] {
            assert!(
                pieces(text).iter().all(|p| matches!(p, Text(_))),
                "{text:?}: {:?}",
                pieces(text)
            );
        }
    }

    #[test]
    fn filling_replaces_placeholders_and_unescapes() {
        assert_eq!(
            WORKER.fill("--bind=127.0.0.1:{port} {pool}/{worker}"),
            "--bind=127.0.0.1:9003 web/2"
        );
        assert_eq!(WORKER.fill("{{port}} is {port}"), "{port} is 9003");
        assert_eq!(WORKER.fill(r#"{"a":{"port":1}}"#), r#"{"a":{"port":1}}"#);
        assert_eq!(WORKER.fill("${port}"), "${port}");
        assert_eq!(WORKER.fill("ünï{port}çødé"), "ünï9003çødé");
        // No value here: left as written (validation refuses it where it matters).
        assert_eq!(WORKER.fill("{socket} {other}"), "{socket} {other}");
        let unix = Placeholders {
            port: None,
            socket: Some(Path::new("/run/forkyard/web/2.sock")),
            ..WORKER
        };
        assert_eq!(unix.fill("unix:{socket}"), "unix:/run/forkyard/web/2.sock");
    }

    #[test]
    fn a_misspelt_placeholder_is_an_error_with_a_suggestion() {
        assert_eq!(
            errors(&pool(
                "    command: [\"python3\", \"app.py\", \"{prot}\"]\n"
            )),
            [
                r#"config.yaml:4:36: pools.web.command[2]: unknown placeholder {prot} (expected {port}, {worker} or {pool}; write {{prot}} for the literal text {prot}); did you mean "{port}"?"#
            ]
        );
        assert_eq!(
            errors(&pool("    command: [app]\n    env:\n      PORT: \"{PORT}\"\n      X: \"{workers}-{nothing_like_it}\"\n")),
            [
                r#"config.yaml:6:13: pools.web.env.PORT: unknown placeholder {PORT} (expected {port}, {worker} or {pool}; write {{PORT}} for the literal text {PORT}); did you mean "{port}"?"#,
                r#"config.yaml:7:10: pools.web.env.X: unknown placeholder {workers} (expected {port}, {worker} or {pool}; write {{workers}} for the literal text {workers}); did you mean "{worker}"?"#,
                r#"config.yaml:7:10: pools.web.env.X: unknown placeholder {nothing_like_it} (expected {port}, {worker} or {pool}; write {{nothing_like_it}} for the literal text {nothing_like_it})"#,
            ]
        );
    }

    #[test]
    fn hooks_run_argv_and_env_are_checked_where_they_are_filled() {
        let hooks = "    command: [app, \"{port}\"]\n    hooks:\n      pre_fork: [{ run: [prep, \"{wroker}\"] }]\n      post_fork: [{ run: [prep], env: { A: \"{pol}\" } }]\n";
        assert_eq!(
            errors(&pool(hooks)),
            [
                r#"config.yaml:6:32: pools.web.hooks.pre_fork[0].run[1]: unknown placeholder {wroker} (expected {port}, {worker} or {pool}; write {{wroker}} for the literal text {wroker}); did you mean "{worker}"?"#,
                r#"config.yaml:7:44: pools.web.hooks.post_fork[0].env.A: unknown placeholder {pol} (expected {port}, {worker} or {pool}; write {{pol}} for the literal text {pol}); did you mean "{pool}"?"#,
            ]
        );
        // on_start runs once: a placeholder there would reach the program as written.
        let once = "    command: [app]\nhooks:\n  on_start: [{ run: [migrate, \"{pool}\", \"{asctime}\"] }]\n";
        assert_eq!(
            errors(&pool(once)),
            ["config.yaml:6:31: hooks.on_start[0].run[1]: {pool} is not filled in on_start hooks, which run once and not for a worker (placeholders are filled in the per-worker phases: pre_fork, post_fork, post_spawn, pre_stop, on_exit)"]
        );
    }

    #[test]
    fn socket_and_port_follow_the_bind() {
        let unix = "pools:\n  web:\n    bind: unix\n    command: [app, \"{socket}\"]\n    hooks:\n      post_spawn: [{ run: [warm, \"{port}\"] }]\n";
        assert_eq!(
            errors(unix),
            ["config.yaml:6:34: pools.web.hooks.post_spawn[0].run[1]: bind: unix workers have no port: use {socket} (the worker's Unix socket path) instead of {port}"]
        );
        let unix_typo = "pools:\n  web:\n    bind: unix\n    command: [app, \"{sockt}\"]\n";
        assert_eq!(
            errors(unix_typo),
            [
                "config.yaml:4:5: pools.web.command: bind: unix needs {socket} in the command or env, so the worker knows where to listen (e.g. [\"gunicorn\", \"--bind\", \"unix:{socket}\", \"app:app\"])",
                r#"config.yaml:4:20: pools.web.command[1]: unknown placeholder {sockt} (expected {socket}, {worker} or {pool}; write {{sockt}} for the literal text {sockt}); did you mean "{socket}"?"#,
            ]
        );
        let port = pool(
            "    command: [app]\n    hooks:\n      on_exit: [{ run: [note, \"{socket}\"] }]\n",
        );
        assert_eq!(
            errors(&port),
            ["config.yaml:6:31: pools.web.hooks.on_exit[0].run[1]: {socket} is only set for bind: unix pools (this pool's workers listen on {port})"]
        );
        // An escaped {{socket}} is text, so it does not tell the worker where to listen.
        let escaped =
            "pools:\n  web:\n    bind: unix\n    command: [app, \"{{socket}}\", \"{{port}}\"]\n";
        assert_eq!(
            errors(escaped),
            ["config.yaml:4:5: pools.web.command: bind: unix needs {socket} in the command or env, so the worker knows where to listen (e.g. [\"gunicorn\", \"--bind\", \"unix:{socket}\", \"app:app\"])"]
        );
    }

    #[test]
    fn braces_that_are_not_placeholders_are_accepted_and_kept() {
        let yaml = pool(concat!(
            "    command: [sh, -c, \"exec app --name $${HOSTNAME} --fmt '{{asctime}} {0}'\", \"{port}\"]\n",
            "    env:\n",
            "      JSON: '{\"a\":1,\"b\":{\"c\":[2]}}'\n",
            "      TEMPLATE: \"{{ name }} {{{{x}}}}\"\n",
            "    hooks:\n",
            "      pre_fork: [{ run: [echo, \"{{pool}}={pool}\"] }]\n",
            "hooks:\n",
            "  on_start: [{ run: [echo, \"{asctime}\", '{\"a\":1}'] }]\n",
        ));
        let config = load(&yaml).unwrap_or_else(|e| panic!("{e:#?}"));
        let web = &config.pools[0];
        let argv: Vec<String> = web.command.iter().map(|a| web.fill(a, 0, 9001)).collect();
        assert_eq!(
            argv,
            [
                "sh",
                "-c",
                "exec app --name ${HOSTNAME} --fmt '{asctime} {0}'",
                "9001"
            ]
        );
        let env: Vec<String> = web.env.iter().map(|(_, v)| web.fill(v, 0, 9001)).collect();
        assert_eq!(env, [r#"{"a":1,"b":{"c":[2]}}"#, "{{ name }} {{{x}}}"]);
    }
}
