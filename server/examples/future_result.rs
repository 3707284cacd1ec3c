//! Primer 5 — a one-shot future whose result someone else sets.
//!
//! The classic asyncio program:
//!
//! ```python
//! async def set_after(fut, delay, value):
//!     await asyncio.sleep(delay)
//!     fut.set_result(value)
//!
//! async def main():
//!     loop = asyncio.get_running_loop()
//!     fut = loop.create_future()
//!     asyncio.create_task(set_after(fut, 1, "hello"))
//!     print(await fut)          # "hello" after ~1 s
//! ```
//!
//! Rust: `futures::channel::oneshot::channel()` returns the two halves of that
//! asyncio `Future`: a `Sender` (the `set_result` side, used once: `send`
//! consumes it) and a `Receiver`, which is itself a future resolving to
//! `Ok(value)`. Handing the halves to different tasks is the point: whoever
//! owns the `Sender` promises the value.
//!
//! Differences worth knowing:
//!
//! * The two ends are separate values with separate owners, so the type
//!   system enforces "set at most once" (`send(self, ..)` takes the sender by
//!   value) instead of raising `InvalidStateError` at run time.
//! * If the `Sender` is dropped without sending — its task failed or was
//!   cancelled — the receiver resolves to `Err(Canceled)` instead of hanging
//!   forever. This replaces asyncio's `fut.cancel()` / `set_exception`.
//! * The sending task is moved into `natter_runtime::spawn`, so everything it
//!   captures must be `Send + 'static`; the `Sender` is.
//! * Awaiting is still lazy: nothing happens in a task until it is spawned or
//!   awaited.
//!
//! Run: `cargo run -p natter-server --example future_result`

#[path = "common/mod.rs"]
mod common;

use futures::channel::oneshot;

use common::{say, secs};

fn main() {
    common::start("future_result: a oneshot channel as asyncio's Future");
    natter_runtime::block_on(async {
        // Part 1: another task sets the result after a delay.
        let (sender, receiver) = oneshot::channel::<String>();
        say!("main: created the oneshot pair; spawning the setter");
        let setter = natter_runtime::spawn(async move {
            say!("setter: working for 1s");
            natter_runtime::sleep(secs(1.0)).await;
            say!("setter: set_result(\"hello\")");
            // `send` consumes the sender: it can only ever be set once. It
            // fails (handing the value back) only if the receiver is gone.
            sender
                .send("hello".to_string())
                .expect("main is still waiting");
        });
        say!("main: awaiting the result");
        match receiver.await {
            Ok(value) => say!("main: got result {value:?}"),
            Err(oneshot::Canceled) => say!("main: the setter went away"),
        }
        setter.await;

        // Part 2: the setter gives up without setting a result.
        let (sender, receiver) = oneshot::channel::<String>();
        say!("main: second pair; this setter will drop its sender without sending");
        let quitter = natter_runtime::spawn(async move {
            natter_runtime::sleep(secs(0.5)).await;
            say!("quitter: giving up (dropping the sender)");
            drop(sender);
        });
        match receiver.await {
            Ok(value) => say!("main: got result {value:?}"),
            Err(oneshot::Canceled) => say!("main: receiver says Canceled: no result will come"),
        }
        quitter.await;
    });
    common::finish();
}
