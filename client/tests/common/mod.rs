//! The real server, in process, as the client tests use it: start it with
//! a configuration, stop it (bounded). Shared by `chat_piped.rs`,
//! `chat_terminal.rs` and `load_accounting.rs` (`mod common;`).

use std::time::Duration;

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
