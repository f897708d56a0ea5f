//! Who holds the sync lock: holder ids of the form `host:pid:random`, and whether a holder's
//! process is gone.
//!
//! A [`SyncEngine`](crate::SyncEngine) takes the lock under [`new_holder_id`]. A store whose lock
//! outlives its holder's process (a lock row, unlike a Postgres session lock) asks
//! [`holder_is_gone`] before making a new run wait for the stale timeout: a holder that names this
//! host and a process that no longer exists cannot be running a sync.
//!
//! "This host" is the machine's name and, inside a container, its PID namespace: two containers
//! with the same host name (`--network host`, the containers of one Kubernetes pod) see each
//! other's processes under other ids or not at all, so they never judge each other's holders and
//! wait for the stale timeout instead.

use std::path::Path;
use std::sync::OnceLock;

/// The PID namespace of the host itself (`PROC_PID_INIT_INO` in Linux).
const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

struct Local {
    host: String,
    /// Whether `/proc/<pid>` tells about this host's processes.
    procfs: bool,
}

fn local() -> &'static Local {
    static LOCAL: OnceLock<Local> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
        let name = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty()))
            .or_else(|| std::env::var("COMPUTERNAME").ok().filter(|h| !h.trim().is_empty()))
            .unwrap_or_else(|| "host".to_owned());
        // `:` separates the parts of a holder id.
        let name = name.trim().replace(':', "-");
        let namespace = std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.to_string_lossy().into_owned());
        match namespace {
            Some(ns) if ns == INITIAL_PID_NAMESPACE => Local { host: name, procfs: true },
            Some(ns) => {
                let id = ns.trim_start_matches("pid:[").trim_end_matches(']').to_owned();
                Local { host: format!("{name}/pidns-{id}"), procfs: true }
            }
            // No procfs (not Linux, or not mounted): liveness cannot be told.
            None => Local { host: name, procfs: false },
        }
    })
}

/// This host as holder ids name it: the host name, with the PID namespace appended inside a
/// container (`myhost/pidns-4026532201`). The same for every call in a process.
pub fn local_host() -> &'static str {
    &local().host
}

/// A new holder id for this process: `host:pid:random`, with [`local_host`] as the host.
pub fn new_holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{}:{}:{:08x}", local_host(), std::process::id(), hasher.finish() as u32)
}

/// The host and process id of a `host:pid:random` holder id (`None` for any other shape).
pub fn parse_holder(holder: &str) -> Option<(&str, u32)> {
    let mut parts = holder.rsplitn(3, ':');
    let _random = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let host = parts.next().filter(|h| !h.is_empty())?;
    Some((host, pid))
}

/// Whether `holder` names a process of this host that no longer exists: `true` only when the id
/// has the `host:pid:random` shape, its host is [`local_host`], and procfs shows no such process.
/// Any doubt (another host, another id shape, no procfs) is `false`: the lock then goes stale by
/// its heartbeat alone.
pub fn holder_is_gone(holder: &str) -> bool {
    let local = local();
    match parse_holder(holder) {
        Some((host, pid)) if local.procfs && host == local.host => {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_name_this_host_and_process() {
        let id = new_holder_id();
        assert_eq!(parse_holder(&id), Some((local_host(), std::process::id())));
        assert_ne!(new_holder_id(), id, "two ids of one process differ");
        assert!(!local_host().is_empty() && !local_host().contains(':'));
        assert_eq!(parse_holder("other:42:abcd"), Some(("other", 42)));
        assert_eq!(parse_holder("other-process"), None);
        assert_eq!(parse_holder(":42:abcd"), None);
        assert_eq!(parse_holder("h:pid:abcd"), None);
    }

    #[test]
    fn only_a_missing_process_of_this_host_is_gone() {
        assert!(!holder_is_gone(&new_holder_id()), "this process runs");
        assert!(!holder_is_gone("another-host:1:abcd"));
        assert!(!holder_is_gone("not a holder id"));
        if !Path::new("/proc/self").exists() {
            return; // no procfs: nothing is ever judged gone
        }
        let mut child = std::process::Command::new("true").spawn().expect("`true` runs");
        let pid = child.id();
        child.wait().unwrap();
        assert!(holder_is_gone(&format!("{}:{pid}:abcd", local_host())), "an exited process is gone");
        assert!(!holder_is_gone(&format!("another-host:{pid}:abcd")), "another host's processes are not judged");
    }
}
