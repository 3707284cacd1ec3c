//! Flooding far over the rate limit: the flooder's first messages (its
//! burst) are served, then each message gets `rate_limited`, and at the
//! 50th `rate_limited` it is closed with 1008 "flooding" — whether it floods
//! with valid requests or with junk. The witness pair in the same room is
//! unaffected: every message arrives, in order, gap-free. Ping frames count
//! like messages: within the rate each gets its pong, past it none does,
//! and a ping flood is closed for flooding like any other.

use async_tungstenite::tungstenite::Message;
use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts, settle};
use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, is_reply, join_task, start};

/// Messages each flooder sends without reading: far more than burst + 50.
const FLOOD: usize = 300;
/// The contract's flood rule: this many `rate_limited` within 10 s close.
const FLOOD_ERRORS: usize = 50;

/// Sends `FLOOD` messages as fast as possible (ids 1..), then reads to the
/// close. Returns the replies in order and the close.
async fn flood(mut c: Client, make: fn(usize) -> String) -> (Vec<Value>, u16, String, usize) {
    let mut sent = 0;
    for i in 1..=FLOOD {
        // The server closes us at some point; a failed send ends the flood.
        if c.try_send_raw(Message::text(make(i))).await.is_err() {
            break;
        }
        sent += 1;
    }
    let (code, reason, frames) = c.read_until_close().await;
    let replies = frames.into_iter().filter(is_reply).collect();
    (replies, code, reason, sent)
}

/// Checks one flooder's replies: one per message in order (by id) up to
/// the close, oks only while it had tokens, then exactly `FLOOD_ERRORS`
/// `rate_limited`, the last reply being one of them. Returns the ids of
/// the requests that were served.
fn check_flood(who: &str, replies: &[Value], ok_kind: &str, burst: usize) -> Vec<u64> {
    assert!(!replies.is_empty(), "{who}: no replies");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["id"], i + 1, "{who}: replies out of order at {i}: {r}");
    }
    let limited: Vec<&Value> = replies
        .iter()
        .filter(|r| r["code"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), FLOOD_ERRORS, "{who}: rate_limited replies");
    for r in &limited {
        assert_eq!(r["type"], "error", "{r}");
        assert!(r["message"].is_string(), "{r}");
    }
    let last = replies.last().unwrap();
    assert_eq!(last["code"], "rate_limited", "{who}: the last reply {last}");
    let served: Vec<&Value> = replies
        .iter()
        .filter(|r| r["code"] != "rate_limited")
        .collect();
    for r in &served {
        match ok_kind {
            "ok" => assert_eq!(r["type"], "ok", "{who}: {r}"),
            code => assert_eq!(r["code"], code, "{who}: {r}"),
        }
    }
    // The burst (less the join) is served before any refusal.
    assert!(
        served.len() >= burst - 1,
        "{who}: only {} served",
        served.len()
    );
    let first_limited = replies
        .iter()
        .position(|r| r["code"] == "rate_limited")
        .unwrap();
    assert!(
        first_limited >= burst - 1,
        "{who}: refused at {first_limited}"
    );
    served.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

#[test]
fn flooders_get_rate_limited_then_closed_1008_flooding_and_the_witness_is_unaffected() {
    natter_runtime::block_on(async {
        let config = Config::local(); // the default limit: 20/s, burst 40
        let burst = config.burst as usize;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        // One floods the room with valid says, one with junk.
        let mut sayer = server.client("sayer").await;
        sayer.join("lobby").await;
        let mut junk = server.client("junk").await;
        junk.join("lobby").await;
        let say = |i: usize| {
            json!({"type": "say", "room": "lobby", "text": format!("flood {i}"), "id": i})
                .to_string()
        };
        let junk_text = |i: usize| format!("{{\"id\":{i}, this is not JSON");
        let sayer = spawn(flood(sayer, say));
        let junk = spawn(flood(junk, junk_text));
        let (replies, code, reason, sent) = join_task("the say flooder", sayer).await;
        assert_eq!(
            (code, reason.as_str()),
            (1008, "flooding"),
            "after {sent} sent"
        );
        let said = check_flood("sayer", &replies, "ok", burst);
        let (replies, code, reason, sent) = join_task("the junk flooder", junk).await;
        assert_eq!(
            (code, reason.as_str()),
            (1008, "flooding"),
            "after {sent} sent"
        );
        // Junk is refused with bad_json while tokens last (no id is read
        // from unparseable text, so those replies have id null).
        for r in &replies {
            if r["code"] == "bad_json" {
                assert_eq!(r["id"], Value::Null, "{r}");
            }
        }
        let limited: Vec<&Value> = replies
            .iter()
            .filter(|r| r["code"] == "rate_limited")
            .collect();
        assert_eq!(limited.len(), FLOOD_ERRORS, "junk: rate_limited replies");
        assert_eq!(replies.last().unwrap()["code"], "rate_limited");
        let bad = replies.iter().filter(|r| r["code"] == "bad_json").count();
        assert_eq!(bad + FLOOD_ERRORS, replies.len(), "junk: {replies:?}");
        assert!(bad >= burst - 1, "junk: only {bad} served");

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        // The served part of the flood reached the room, in order.
        let texts = report.texts_from("sayer");
        let expected: Vec<String> = said.iter().map(|i| format!("flood {i}")).collect();
        assert_eq!(texts, expected);
        report.assert_joined_and_left("sayer");
        report.assert_joined_and_left("junk");
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn a_ping_flood_gets_no_pongs_past_the_rate_and_is_closed_for_flooding() {
    natter_runtime::block_on(async {
        let config = Config::local(); // rate 20/s, burst 40
        let burst = config.burst as usize;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        // Far more pings than the burst and the flood rule's 50 together,
        // sent without reading anything.
        let mut pinger = server.client("pinger").await;
        pinger.join("lobby").await; // one token
        for i in 0..FLOOD {
            let sent = pinger
                .try_send_raw(Message::Ping(format!("{i}").into_bytes().into()))
                .await;
            if sent.is_err() {
                break; // closed already
            }
        }
        let mut pongs = 0;
        let close = loop {
            match pinger.next_message().await {
                Some(Message::Pong(_)) => pongs += 1,
                Some(Message::Close(frame)) => break frame,
                Some(Message::Text(_)) => {} // presence of the witness
                other => panic!("pinger: unexpected {other:?}"),
            }
            assert!(pongs <= FLOOD, "more pongs than pings");
        };
        let close = close.expect("a close frame with a code");
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1008, "flooding")
        );
        // The burst (less the join) is answered; past it, no pong. The
        // bucket refills at 20/s while the flood goes on: a generous 40
        // more for refills over up to 2 s of a loaded machine.
        assert!(
            pongs >= 1 && pongs <= burst + 40,
            "{pongs} pongs for a burst of {burst}"
        );

        let report = witness.finish().await;
        assert!(report.said >= 5, "{}", report.said);
        report.assert_joined_and_left("pinger");
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
