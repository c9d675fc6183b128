//! Resolving the `user:` and `group:` of a pool's `post_fork` built-ins: a name, or
//! a numeric id. Shared by the worker process (which switches to them) and by
//! forkyard (which gives them the pool's socket directory).

use nix::unistd::{Gid, Group, User};

/// The account named `name` (or with uid `name`).
pub(crate) fn user(name: &str) -> Result<User, String> {
    match name.parse::<u32>() {
        Ok(id) => User::from_uid(id.into()).ok().flatten(),
        Err(_) => User::from_name(name).ok().flatten(),
    }
    .ok_or_else(|| format!("unknown user {name:?}"))
}

/// The gid of group `name`; a number is taken as the gid itself.
pub(crate) fn gid(name: &str) -> Result<Gid, String> {
    match name.parse::<u32>() {
        Ok(id) => Ok(Gid::from_raw(id)),
        Err(_) => Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid)
            .ok_or_else(|| format!("unknown group {name:?}")),
    }
}
