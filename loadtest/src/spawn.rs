//! Child processes that do not outlive the load generator, however it ends.
//!
//! `kill_on_drop` covers every ending the process itself sees (result, hard deadline,
//! Ctrl-C, error), but not a SIGKILL of the load generator: then nothing runs to kill the
//! redis-server, the nodes and the worker processes it started. So children are started
//! through `setpriv --pdeathsig KILL -- PROGRAM ARGS` (util-linux), which asks the kernel
//! to SIGKILL the child when its parent dies and then execs the program in place (same
//! pid). `unsafe_code` is forbidden in the workspace, which rules out calling
//! `prctl(PR_SET_PDEATHSIG)` in a `pre_exec` hook ourselves. Without a working `setpriv`
//! the program is started directly, with one warning.
//!
//! Architecture Invariant: the kernel sends the signal when the *thread* that spawned the
//! child exits, not the process. Children are therefore spawned from the thread that
//! drives the run (the main thread, inside `Runtime::block_on`) or from tokio worker
//! threads, which live as long as the runtime; never from `spawn_blocking` threads, which
//! exit after 10 s idle and would take their children with them.

use std::ffi::{OsStr, OsString};
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::process::Command;

/// A command for `program` whose process gets SIGKILL when this process dies.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    match setpriv() {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// `setpriv` if it runs here and knows `--pdeathsig` (util-linux 2.33 and later).
fn setpriv() -> Option<&'static OsStr> {
    static SETPRIV: OnceLock<Option<OsString>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let works = std::process::Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !works {
                eprintln!(
                    "warning: `setpriv --pdeathsig` (util-linux) is not available: if this \
                     process is killed with SIGKILL, the processes it started (redis-server, \
                     nodes, workers) keep running"
                );
            }
            works.then(|| OsString::from("setpriv"))
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_command_runs_the_program_with_its_arguments() {
        let out = command("echo").arg("hello").output().await.unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    }
}
