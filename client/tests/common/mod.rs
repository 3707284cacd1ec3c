//! The real server, in process, as the client tests use it: start it with
//! a configuration, stop it (bounded); and run the `natter` binary to its
//! end, bounded. Shared by the chat and load test files (`mod common;`).

use std::time::Duration;

// The fake server of the load tester's accounting tests; the chat tests,
// which include this module too, do not use it.
#[allow(dead_code)]
pub mod fake;

use natter_server::{Config, Server, ServerHandle};

/// Longest the server may take to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A running in-process server.
pub struct Running {
    pub handle: ServerHandle,
    task: natter_runtime::JoinHandle<usize>,
}

/// Binds `config` and runs the server on its own task.
pub fn start_server_with(config: Config) -> Running {
    let server = natter_runtime::block_on(Server::bind(config)).expect("the server binds");
    let handle = server.handle();
    let task = natter_runtime::spawn(async move { server.run().await.expect("server runs") });
    Running { handle, task }
}

impl Running {
    /// Shuts it down gracefully and waits (bounded) for it to stop.
    pub fn stop(self) {
        self.handle.shutdown();
        let stopped = natter_runtime::block_on(natter_runtime::timeout(STOP_WAIT, self.task));
        assert!(
            stopped.is_some(),
            "the server did not stop within {STOP_WAIT:?}"
        );
    }
}

/// Runs a `natter` command to its end and returns its exit code, stdout
/// and stderr; kills it and fails the test past `limit`. Its output is read
/// on threads of their own: stdout ends when the child exits, which is
/// what the bound waits for. (The chat tests do not run the binary this
/// way: not every file that includes this module uses it.)
#[allow(dead_code)]
pub fn run_bounded(
    mut command: std::process::Command,
    limit: Duration,
    what: &str,
) -> (i32, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the natter binary starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done.send(text);
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = match finished.recv_timeout(limit) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}; killed");
        }
    };
    let status = child.wait().expect("waiting for natter");
    let stderr = errors.join().expect("stderr reader");
    let code = status.code().expect("natter exited (not by a signal)");
    (code, stdout, stderr)
}
