//! Guarantee 4's last sentence, for whispers: a member that reads promptly
//! is not closed as a slow consumer by a burst that others cause within
//! their rate limits; the server paces the senders instead. Six senders
//! each send their whole burst (`burst`, 40 by default, so every whisper is
//! within the rate limit) of whispers to one victim at once, with a queue
//! of 16 frames:
//! - a victim that reads continuously stays connected and gets every
//!   whisper, each sender's in the order sent (small texts, and maximal
//!   texts that escape to ~24 KB each, which fill socket buffers);
//! - the control: a victim that does not read is still closed with 1008
//!   "slow consumer" by the same burst, so the first case shows pacing,
//!   not a limit that no longer applies. (With maximal texts the burst is
//!   about 5.9 MB; socket buffers on loopback take about 4 MB of it for a
//!   client that does not read: on the machine this was written on, the
//!   non-reader got 163 whispers and then 1008, and 53 to 55 of the 240
//!   whispers came after it was gone. Small texts would all fit in the
//!   socket buffers, so the control uses maximal ones.)
//!
//! A witness pair chats in `lobby` throughout and must lose nothing; the
//! server's counters are back to zero at the end.

use async_tungstenite::tungstenite::Message;
use futures::channel::oneshot;
use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts};
use natter_tests::serde_json::{Value, json};
use natter_tests::{Config, TestServer, is_reply, join_task, start};

const SENDERS: usize = 6;
const QUEUE: usize = 16;
const VICTIM: &str = "victim";

fn config() -> Config {
    Config {
        queue: QUEUE,
        ..Config::local()
    }
}

/// Sender `k`'s whisper `i`: a tag, then (for maximal texts) U+0001 up to
/// `max_text_bytes` (JSON writes each as `\u0001`, 6 bytes).
fn whisper_text(k: usize, i: usize, maximal: Option<usize>) -> String {
    let tag = format!("s{k} #{i} ");
    match maximal {
        Some(bytes) => format!("{tag}{}", "\u{1}".repeat(bytes - tag.len())),
        None => tag,
    }
}

/// Sender `k`'s tag and index, read back from a whisper's text.
fn parse_text(text: &str) -> (usize, usize) {
    let mut words = text.split(' ');
    let k = words.next().and_then(|w| w.strip_prefix('s'));
    let i = words.next().and_then(|w| w.strip_prefix('#'));
    match (
        k.and_then(|k| k.parse().ok()),
        i.and_then(|i| i.parse().ok()),
    ) {
        (Some(k), Some(i)) => (k, i),
        _ => panic!("not a burst whisper: {text:?}"),
    }
}

/// Connects the senders, then (after `go`) has each send its `burst`
/// whispers to the victim in one write and read its replies; returns each
/// sender's replies.
async fn burst(
    server: &TestServer,
    burst: usize,
    maximal: Option<usize>,
    go: oneshot::Receiver<()>,
) -> Vec<Vec<Value>> {
    let mut senders = Vec::new();
    for k in 0..SENDERS {
        senders.push(server.client(&format!("sender{k}")).await);
    }
    go.await.expect("the victim is ready");
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            spawn(async move {
                for i in 0..burst {
                    let text = whisper_text(k, i, maximal);
                    let w = json!({"type": "whisper", "to": VICTIM, "text": text, "id": i});
                    c.feed_raw(Message::text(w.to_string())).await;
                }
                c.flush().await;
                let mut replies = Vec::new();
                for _ in 0..burst {
                    let (reply, _) = c.recv_until(natter_tests::MAX_FRAMES, is_reply).await;
                    replies.push(reply);
                }
                c.close().await;
                replies
            })
        })
        .collect();
    let mut all = Vec::new();
    for (k, t) in tasks.into_iter().enumerate() {
        all.push(join_task(&format!("sender{k} sends its burst"), t).await);
    }
    all
}

/// One run: the witness, a victim (reading or not), the burst.
async fn run(reads: bool, maximal: bool) {
    let config = config();
    let server = start(config.clone()).await;
    let burst_len = config.burst as usize;
    let maximal = maximal.then_some(config.max_text_bytes);
    let mut witness =
        Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
    witness.wait_said(3).await;

    let mut victim = server.client(VICTIM).await;
    let (go_tx, go) = oneshot::channel();
    let expected = SENDERS * burst_len;
    let victim_task = spawn(async move {
        let _ = go_tx.send(());
        if !reads {
            // Reads nothing until the burst is over (told so below).
            return (victim, Vec::new());
        }
        let mut got: Vec<Value> = Vec::new();
        for _ in 0..expected + 100 {
            if got.len() == expected {
                break;
            }
            // The victim must stay open: a close fails the test, saying
            // how far the burst had come.
            match victim.next_message().await {
                Some(Message::Text(t)) => {
                    let v: Value = natter_tests::serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "whisper", "victim: {v}");
                    got.push(v);
                }
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!(
                    "the reading victim got {other:?} after {} of {expected} whispers",
                    got.len()
                ),
            }
        }
        (victim, got)
    });
    let replies = burst(&server, burst_len, maximal, go).await;
    let (mut victim, got) = join_task("the victim", victim_task).await;

    if reads {
        // Every whisper accepted, and every one received, each sender's
        // in the order it sent them.
        for (k, r) in replies.iter().enumerate() {
            for (i, reply) in r.iter().enumerate() {
                assert_eq!(reply["type"], "ok", "sender{k} whisper {i}: {reply}");
                assert_eq!(reply["id"], i, "sender{k}: {reply}");
                assert_eq!(reply["to"], VICTIM, "sender{k}: {reply}");
            }
        }
        let mut next = vec![0usize; SENDERS];
        for v in &got {
            let text = v["text"].as_str().unwrap();
            let (k, i) = parse_text(text);
            assert_eq!(v["from"], format!("sender{k}"), "{text:?}");
            assert_eq!(i, next[k], "sender{k}'s whispers out of order or lost");
            if let Some(bytes) = maximal {
                assert_eq!(text, whisper_text(k, i, Some(bytes)));
            }
            next[k] += 1;
        }
        assert_eq!(next, vec![burst_len; SENDERS], "whispers per sender");
        // Still served.
        let rooms = victim.ok(json!({"type": "rooms"})).await;
        assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 2}]));
        eprintln!(
            "reading victim, {} texts: {} whispers received from {SENDERS} senders, queue {QUEUE}",
            if maximal.is_some() {
                "maximal"
            } else {
                "small"
            },
            got.len()
        );
        victim.close().await;
    } else {
        let (code, reason, frames) = victim.read_until_close().await;
        let whispers = frames.iter().filter(|f| f["type"] == "whisper").count();
        let refused = replies
            .iter()
            .flatten()
            .filter(|r| r["type"] != "ok")
            .count();
        eprintln!(
            "non-reading victim: closed {code} {reason:?} after {whispers} whispers delivered; \
             {refused} of {} whispers refused (the victim gone)",
            SENDERS * burst_len
        );
        assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
        for r in replies.iter().flatten() {
            if r["type"] != "ok" {
                assert_eq!(r["code"], "no_such_user", "{r}");
            }
        }
    }

    let report = witness.finish().await;
    assert!(report.said >= 20, "{}", report.said);
    report.close().await;
    server.assert_idle().await;
}

#[test]
fn a_victim_that_reads_gets_every_small_whisper_of_a_burst_and_stays() {
    natter_runtime::block_on(run(true, false));
}

#[test]
fn a_victim_that_reads_gets_every_maximal_whisper_of_a_burst_and_stays() {
    natter_runtime::block_on(run(true, true));
}

#[test]
fn control_a_victim_that_does_not_read_is_still_closed_1008_by_the_same_burst() {
    natter_runtime::block_on(run(false, true));
}
