//! A slow reader never slows the room: it is closed with 1008 "slow
//! consumer" while the others keep receiving every message in order; a
//! client that pipelines faster than it reads is slowed down, not dropped.

use async_tungstenite::tungstenite::Message;
use natter_tests::serde_json::{Value, json};
use natter_tests::{Config, is_reply, join_task, start};

/// Most messages the flooder sends while waiting for the slow consumer to
/// be dropped (each `TEXT_BYTES` long: far more than socket buffers hold).
const MAX_FLOOD: usize = 4000;
const TEXT_BYTES: usize = 16 * 1024;

#[test]
fn a_reader_that_never_reads_is_closed_1008_and_the_room_goes_on() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.queue = 8;
        config.max_text_bytes = TEXT_BYTES;
        let server = start(config).await;

        let mut slow = server.client("slow").await;
        slow.join("room").await;
        let mut listener = server.client("listener").await;
        listener.join("room").await;
        let mut flooder = server.client("flooder").await;
        flooder.join("room").await;
        listener.recv().await; // flooder's join
        // From here on, `slow` reads nothing until it has been dropped.

        // The listener reads everything, concurrently, until "done".
        let listen = natter_runtime::spawn(async move {
            let mut seqs = Vec::new();
            let mut saw_slow_leave = false;
            for _ in 0..MAX_FLOOD + 100 {
                let v = listener.recv().await;
                match v["type"].as_str() {
                    Some("message") => {
                        seqs.push(v["seq"].as_u64().unwrap());
                        if v["text"] == "done" {
                            return (seqs, saw_slow_leave, listener);
                        }
                    }
                    Some("presence") => {
                        assert_eq!(
                            (&v["event"], &v["nick"]),
                            (&json!("leave"), &json!("slow")),
                            "{v}"
                        );
                        saw_slow_leave = true;
                    }
                    _ => panic!("unexpected frame {v}"),
                }
            }
            panic!("listener never saw \"done\"");
        });

        // Flood until the room hears that the slow member left.
        let text = "x".repeat(TEXT_BYTES);
        let mut sent = 0;
        let mut flooder_seqs = Vec::new();
        let mut slow_left = false;
        while !slow_left {
            assert!(
                sent < MAX_FLOOD,
                "slow consumer not dropped after {sent} messages"
            );
            let (reply, events) = flooder
                .request(json!({"type": "say", "room": "room", "text": text}))
                .await;
            assert_eq!(reply["type"], "ok", "the flooder got {reply}");
            sent += 1;
            for e in &events {
                match e["type"].as_str() {
                    Some("message") => flooder_seqs.push(e["seq"].as_u64().unwrap()),
                    Some("presence") if e["event"] == "leave" && e["nick"] == "slow" => {
                        slow_left = true
                    }
                    _ => panic!("unexpected frame {e}"),
                }
            }
        }

        // Now the slow client reads: whatever the server had queued or
        // buffered before dropping it (a gap-free prefix), then the close.
        let (code, reason, frames) = slow.read_until_close().await;
        assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
        let got: Vec<u64> = frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert!(
            (got.len() as u64) < sent as u64,
            "the slow client got all {} messages",
            got.len()
        );
        assert_eq!(
            got,
            (1..=got.len() as u64).collect::<Vec<_>>(),
            "slow client's prefix"
        );
        drop(slow);

        // The room went on: the flooder and the listener got every message.
        let (reply, events) = flooder
            .request(json!({"type": "say", "room": "room", "text": "done"}))
            .await;
        let last = reply["seq"].as_u64().unwrap();
        assert_eq!(last, sent as u64 + 1);
        flooder_seqs.extend(
            events
                .iter()
                .filter(|e| e["type"] == "message")
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        if flooder_seqs.len() < last as usize {
            let (m, _) = flooder.recv_type("message").await;
            flooder_seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(flooder_seqs, (1..=last).collect::<Vec<_>>());
        let (seqs, saw_slow_leave, _listener) = join_task("listener", listen).await;
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "listener's messages");
        assert!(
            saw_slow_leave,
            "the listener did not hear the slow member leave"
        );
        let who = flooder.ok(json!({"type": "who", "room": "room"})).await;
        assert_eq!(who["members"], json!(["flooder", "listener"]));
    })
}

#[test]
fn a_pipelining_client_is_slowed_down_not_disconnected() {
    natter_runtime::block_on(async {
        const REQUESTS: usize = 500;
        let mut config = Config::local();
        config.rate = 0;
        config.queue = 8;
        let server = start(config).await;
        let mut c = server.client("piper").await;
        c.join("room").await;
        // Fill the history so that every re-join reply is large (about
        // 80 KB): the replies to the pipelined requests are far more than
        // socket buffers hold, while the requests themselves are small.
        let big = "h".repeat(4000);
        for _ in 0..20 {
            c.say("room", &big).await;
        }
        let mut kinds = Vec::new();
        for i in 0..REQUESTS {
            let req = if i % 5 == 0 {
                json!({"type": "join", "room": "room", "id": i})
            } else {
                json!({"type": "say", "room": "room", "text": format!("p{i}"), "id": i})
            };
            kinds.push(req["type"].as_str().unwrap().to_owned());
            c.feed_raw(Message::text(req.to_string())).await;
        }
        c.flush().await;

        // Only now read: every reply, in order, and every echo.
        let mut replies: Vec<Value> = Vec::new();
        let mut echoes = Vec::new();
        for _ in 0..10 * REQUESTS {
            if replies.len() == REQUESTS && echoes.len() == REQUESTS - REQUESTS / 5 {
                break;
            }
            let v = c.recv().await;
            if is_reply(&v) {
                replies.push(v);
            } else {
                assert_eq!(v["type"], "message", "{v}");
                echoes.push(v["seq"].as_u64().unwrap());
            }
        }
        assert_eq!(replies.len(), REQUESTS);
        let mut next_seq = 21;
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r["type"], "ok", "request {i}: {r}");
            assert_eq!(r["id"], i, "replies out of order");
            if kinds[i] == "say" {
                assert_eq!(r["seq"], next_seq, "{r}");
                next_seq += 1;
            } else {
                assert_eq!(r["history"].as_array().unwrap().len(), 20);
            }
        }
        assert_eq!(echoes, (21..next_seq).collect::<Vec<_>>());
        // Still connected and served.
        let reply = c.ok(json!({"type": "who", "room": "room"})).await;
        assert_eq!(reply["members"], json!(["piper"]));
        assert_eq!(server.stats().await.registry.users, 1);
    })
}
