//! A member that stops reading while its room is busy is closed with 1008
//! "slow consumer"; the witness pair in the same room receives everything,
//! in order, and the busy sender is never held up.

use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts, scaled, settle};
use natter_tests::serde_json::json;
use natter_tests::{Config, join_task, start};

/// Bytes of each busy message: far more data than socket buffers hold
/// after a few hundred messages.
const TEXT_BYTES: usize = 16 * 1024;
/// Most messages the busy member sends waiting for the slow one to go.
const MAX_BUSY: usize = 4000;

#[test]
fn a_member_that_stops_reading_is_closed_1008_and_the_witness_sees_everything() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.queue = 8;
        config.max_text_bytes = TEXT_BYTES;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let sloths: Vec<String> = (0..scaled(2)).map(|i| format!("sloth{i}")).collect();
        let mut slow = std::collections::HashMap::new();
        for nick in &sloths {
            let mut c = server.client(nick).await;
            c.join("lobby").await;
            slow.insert(nick.clone(), c); // from here on, it reads nothing
        }
        let mut busy = server.client("busy").await;
        busy.join("lobby").await;

        // Keep the room busy until every sloth has been dropped. A dropped
        // sloth starts reading at once (the server gives a close frame a
        // bounded time to get out): a gap-free prefix of the room, then 1008.
        let text = "b".repeat(TEXT_BYTES);
        let mut readers = Vec::new();
        let mut sent = 0;
        while !slow.is_empty() {
            assert!(
                sent < MAX_BUSY,
                "{} slow consumer(s) still there after {sent} messages",
                slow.len()
            );
            let (reply, events) = busy
                .request(json!({"type": "say", "room": "lobby", "text": text}))
                .await;
            assert_eq!(reply["type"], "ok", "{reply}");
            sent += 1;
            for e in events
                .iter()
                .filter(|e| e["type"] == "presence" && e["event"] == "leave")
            {
                let nick = e["nick"].as_str().unwrap().to_owned();
                let mut c = slow
                    .remove(&nick)
                    .unwrap_or_else(|| panic!("unexpected leave {e}"));
                readers.push(spawn(async move {
                    let (code, reason, frames) = c.read_until_close().await;
                    assert_eq!((code, reason.as_str()), (1008, "slow consumer"), "{nick}");
                    let seqs: Vec<u64> = frames
                        .iter()
                        .filter(|f| f["type"] == "message")
                        .map(|f| f["seq"].as_u64().unwrap())
                        .collect();
                    assert!(
                        seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "{nick}: {seqs:?}"
                    );
                }));
            }
        }
        eprintln!(
            "{} slow consumer(s) dropped after {sent} busy messages",
            sloths.len()
        );
        for r in readers {
            join_task("a dropped sloth reads to its close", r).await;
        }

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        assert_eq!(report.texts_from("busy").len(), sent, "the busy messages");
        for nick in &sloths {
            report.assert_joined_and_left(nick);
        }
        let who = busy.ok(json!({"type": "who", "room": "lobby"})).await;
        assert_eq!(who["members"], json!(["busy", "wit-l", "wit-s"]));
        busy.close().await;
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
