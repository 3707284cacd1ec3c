//! The `natter-server` binary: options, logging, signals, and the server.

use std::io::Write;
use std::pin::pin;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use futures::future::{Either, select};
use natter_server::{Config, Server};

/// Runs the server; a failure is one line on stderr and exit status 1
/// (the causes joined on that line, rather than anyhow's multi-line report,
/// so that a service manager's log shows the whole reason in one entry).
fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    match start(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(config: Config) -> anyhow::Result<()> {
    natter_runtime::set_worker_threads(config.threads.into())
        .context("starting the executor threads")?;
    if let Some(warning) = natter_runtime::worker_threads_override() {
        log::warn!("{warning} given by --threads");
    }
    log::debug!(
        "running tasks on {} {} executor thread(s)",
        config.threads,
        natter_runtime::RUNTIME
    );
    raise_open_files_limit();
    natter_runtime::block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config)
        .await
        .context("starting natter-server")?;
    let handle = server.handle();
    // Handlers go in before the "listening" line, so a script that signals
    // as soon as it reads that line always gets a graceful shutdown.
    let mut signals = natter_runtime::stop_signals().context("installing signal handlers")?;
    // Scripts and tests find the real port on stdout; logs go to stderr.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", handle.url()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    log::info!("listening on {}", handle.url());

    let on_signal = handle.clone();
    let watch = async move {
        if let Some(signal) = signals.next().await {
            log::info!("received {signal:?}: shutting down gracefully");
            on_signal.shutdown();
        }
        // A second signal means "now".
        if let Some(signal) = signals.next().await {
            log::warn!("received {signal:?} again: exiting immediately");
            std::process::exit(130);
        }
    };
    // The watcher runs here, on the main thread beside the accept loop, not
    // as a task on the executor: a burst of work there (thousands of
    // clients dropping at once) must not hold up a SIGTERM behind it.
    let run = server.run();
    let cut_off = match select(pin!(run), pin!(watch)).await {
        Either::Left((cut_off, _)) => cut_off,
        Either::Right(((), run)) => run.await,
    }?;
    if cut_off > 0 {
        log::warn!("exited with {cut_off} connection(s) not closed cleanly");
    }
    Ok(())
}

/// Thousands of sockets need thousands of descriptors: raise the soft
/// limit to the hard limit and say what we got.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::info!("open files limit: {limit}"),
        Err(e) => log::warn!("could not raise the open files limit: {e}"),
    }
}
