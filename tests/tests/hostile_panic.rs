//! A request that panics inside the server (the `fault-injection` hook: a
//! `say` whose text is "boom"). The panicking client gets an `internal`
//! error with its request id, then close 1011; nothing it pipelined after
//! the panic is carried out; its slot and registry entries are freed; the
//! witness pair notices nothing but the panicked members' `leave`.

use async_tungstenite::tungstenite::Message;
use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts, scaled, settle};
use natter_tests::serde_json::json;
use natter_tests::{Config, is_reply, join_task, start};

/// Keeps the injected panics (expected, one per bomber) out of the test
/// output; any other panic is reported as usual.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with("fault injection: ") {
            default(info);
        }
    }));
}

#[test]
fn a_panicking_request_gets_internal_and_1011_and_harms_no_one_else() {
    quiet_injected_panics();
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.panic_on_text = Some("boom".into());
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        // Several panics at once, from members of the witness's room.
        let bombers: Vec<String> = (0..scaled(6)).map(|i| format!("bomber{i}")).collect();
        let mut tasks = Vec::new();
        for nick in &bombers {
            let mut c = server.client(nick).await;
            c.join("lobby").await;
            c.join(&format!("{nick}-own")).await;
            let nick = nick.clone();
            tasks.push(spawn(async move {
                c.say("lobby", &format!("{nick} before")).await;
                // The bomb, then more requests pipelined behind it.
                let boom = json!({"type": "say", "room": "lobby", "text": "boom", "id": format!("{nick}-b")});
                c.feed_raw(Message::text(boom.to_string())).await;
                for i in 0..5 {
                    let after = json!({"type": "say", "room": "lobby", "text": format!("{nick} after {i}"), "id": i});
                    c.feed_raw(Message::text(after.to_string())).await;
                }
                c.flush().await;
                let (code, reason, frames) = c.read_until_close().await;
                assert_eq!(code, 1011, "{nick}: reason {reason:?}");
                let replies: Vec<_> = frames.iter().filter(|f| is_reply(f)).collect();
                assert_eq!(replies.len(), 1, "{nick}: exactly one reply after the bomb: {replies:?}");
                let r = replies[0];
                assert_eq!(r["type"], "error", "{r}");
                assert_eq!(r["code"], "internal", "{r}");
                assert_eq!(r["id"], format!("{nick}-b"), "{r}");
                assert!(r["message"].is_string(), "{r}");
                // Nothing after the panic was carried out.
                assert!(
                    !frames.iter().any(|f| f["type"] == "message" && f["from"] == nick.as_str()),
                    "{nick}: {frames:?}"
                );
            }));
        }
        for t in tasks {
            join_task("a bomber", t).await;
        }
        // Every panicked member is gone, with its memberships.
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1 + bombers.len(), "{stats:?}");

        // Newcomers are served as before: nothing was left locked or
        // half-done by the panics.
        let mut late = server.client("late").await;
        late.join("lobby").await;
        late.say("lobby", "all quiet").await;
        late.close().await;

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        for nick in &bombers {
            report.assert_joined_and_left(nick);
            assert_eq!(report.texts_from(nick), [format!("{nick} before")]);
        }
        assert_eq!(report.texts_from("late"), ["all quiet"]);
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1 + bombers.len(), "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
