//! The real `natter-server` binary: it prints where it listens, serves a
//! client, and on SIGTERM shuts down gracefully (the client gets a
//! `shutdown` event and close 1001) and exits with status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use natter_runtime::{TcpStream, timeout};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(20);

/// Kills the child (by pid) if the test ends before the child exited.
struct KillOnDrop {
    pid: u32,
    exited: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.exited {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn next_text(ws: &mut Ws) -> Value {
    for _ in 0..1000 {
        match timeout(BOUND, ws.next()).await {
            Some(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    panic!("no text frame")
}

/// Reads up to the reply to `id`, returning it and the events before it.
async fn reply_for(ws: &mut Ws, id: i64) -> (Value, Vec<Value>) {
    let mut events = Vec::new();
    for _ in 0..1000 {
        let v = next_text(ws).await;
        if v["type"] == "ok" || v["type"] == "error" {
            assert_eq!(v["id"], id, "{v}");
            return (v, events);
        }
        events.push(v);
    }
    panic!("no reply to {id}")
}

#[test]
fn sigterm_shuts_down_gracefully_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter-server"))
        .args(["--listen", "127.0.0.1:0", "--shutdown-grace", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start natter-server");
    let mut guard = KillOnDrop {
        pid: child.id(),
        exited: false,
    };

    // The first stdout line names the address (read on a thread, bounded).
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = line_tx.send(lines.next());
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = line_rx
        .recv_timeout(BOUND)
        .expect("no stdout line from natter-server within 20 s")
        .expect("natter-server closed stdout without a line")
        .expect("read stdout");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    assert!(line.contains("listening on ws://127.0.0.1:"), "{line:?}");
    assert!(url.ends_with("/ws"), "{url}");
    let port: u16 = url
        .trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches("/ws")
        .parse()
        .unwrap_or_else(|_| panic!("no port in {url}"));
    assert_ne!(port, 0);

    // Waits for the process on a thread, so the exit can be awaited.
    let (exit_tx, exit_rx) = mpsc::channel::<std::io::Result<ExitStatus>>();

    natter_runtime::block_on(async {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let tcp = timeout(BOUND, natter_runtime::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (mut ws, _) = timeout(
            BOUND,
            async_tungstenite::client_async(format!("{url}?nick=alice"), tcp),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake");
        let welcome = next_text(&mut ws).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["nick"], "alice");

        ws.send(Message::text(
            json!({"type": "join", "room": "lobby", "id": 1}).to_string(),
        ))
        .await
        .unwrap();
        let (reply, _) = reply_for(&mut ws, 1).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        ws.send(Message::text(
            json!({"type": "say", "room": "lobby", "text": "before the signal", "id": 2})
                .to_string(),
        ))
        .await
        .unwrap();
        let (reply, mut events) = reply_for(&mut ws, 2).await;
        assert_eq!(reply["seq"], 1, "{reply}");

        let status = Command::new("kill")
            .args(["-TERM", &guard.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");

        // Everything before the shutdown event, then close 1001.
        let mut close = None;
        for _ in 0..1000 {
            match timeout(BOUND, ws.next()).await {
                Some(Some(Ok(Message::Text(t)))) => {
                    events.push(serde_json::from_str(t.as_str()).unwrap())
                }
                Some(Some(Ok(Message::Close(frame)))) => {
                    close = Some(frame.map(|f| u16::from(f.code)));
                    break;
                }
                Some(Some(Ok(_))) => continue,
                other => panic!("expected frames then a close, got {other:?} after {events:?}"),
            }
        }
        let close = close.expect("no close frame");
        assert_eq!(close, Some(1001), "close code");
        let (last, rest) = events.split_last().expect("no shutdown event");
        assert_eq!(last["type"], "shutdown", "{events:?}");
        assert!(
            rest.iter()
                .any(|e| e["type"] == "message" && e["text"] == "before the signal"),
            "{rest:?}"
        );
        // Finish the close handshake and let the socket go.
        for _ in 0..100 {
            match timeout(BOUND, ws.next()).await {
                Some(Some(Ok(_))) => continue,
                _ => break,
            }
        }
        drop(ws);
    });

    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = exit_rx
        .recv_timeout(BOUND)
        .expect("natter-server did not exit within 20 s of SIGTERM")
        .expect("wait for natter-server");
    guard.exited = true;
    assert!(status.success(), "natter-server exited with {status}");
}
