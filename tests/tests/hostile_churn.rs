//! Connection churn: thousands of connect / join / disconnect cycles, 32 at
//! a time, ending every way a connection can end (clean close, close frame
//! and gone, abrupt FIN, TCP reset with a request in flight, leave then
//! close, a half-sent upgrade). Afterwards the server's own counters hold
//! the witnesses only: no user, membership, slot or task of the churners
//! is left, and their nicks are free again. (The real binary's memory under
//! the same churn is checked in server/tests/hostile_binary.rs.)
//! Also: a flood of new rooms stays within `--max-rooms` by eviction and
//! never evicts a room that has members.

// `x % n == 0` rather than `is_multiple_of` (Rust 1.87): the workspace
// declares rust-version 1.85.
#![allow(clippy::manual_is_multiple_of)]

use std::net::{IpAddr, Ipv4Addr};

use async_tungstenite::tungstenite::Message;
use futures::AsyncWriteExt;
use natter_runtime::spawn;
use natter_tests::hostile::{Witness, WitnessOpts, scaled, set_linger_zero, settle};
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, bounded, join_task, start, upgrade_request};

const CONCURRENCY: usize = 32;
/// Rooms the churners use besides the witness's.
const CHURN_ROOMS: usize = 8;

/// One cycle; `i` picks the nick, the rooms and the way it ends.
async fn cycle(url: String, i: usize) {
    // Spread the sockets over loopback source addresses, so a big run does
    // not exhaust one address's ephemeral ports (closed sockets linger in
    // TIME_WAIT).
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8));
    if i % 7 == 6 {
        // Half an upgrade, then gone.
        let addr = natter_tests::addr_of(&url);
        let mut tcp = bounded("connect", natter_runtime::connect_from(local, addr))
            .await
            .expect("connect");
        let req = upgrade_request(&format!("/ws?nick=ch{i}"), "");
        let _ = bounded("write", tcp.write_all(&req.as_bytes()[..req.len() / 2])).await;
        if i % 2 == 0 {
            set_linger_zero(&tcp).expect("SO_LINGER 0");
        }
        return;
    }
    let nick = format!("ch{i}");
    let mut c = match Client::try_connect_from(local, &format!("{url}?nick={nick}")).await {
        Ok(c) => c,
        Err(e) => panic!("cycle {i}: {e}"),
    };
    let welcome = c.recv().await;
    assert_eq!(welcome["nick"], nick.as_str(), "cycle {i}: {welcome}");
    c.join(&format!("churn{}", i % CHURN_ROOMS)).await;
    if i % 4 == 0 {
        c.join("lobby").await;
    }
    match i % 7 {
        0 => c.close().await,
        1 => drop(c), // FIN, no close frame
        2 => {
            // A request in flight, then a reset.
            c.send_json(&json!({"type": "say", "room": "lobby", "text": "x"}))
                .await;
            c.reset();
        }
        3 => {
            c.ok(json!({"type": "leave", "room": format!("churn{}", i % CHURN_ROOMS)}))
                .await;
            c.close().await;
        }
        4 => {
            // A close frame, and gone without waiting for the answer.
            let _ = c.try_send_raw(Message::Close(None)).await;
            drop(c);
        }
        _ => {
            c.say(&format!("churn{}", i % CHURN_ROOMS), "hi").await;
            c.reset();
        }
    }
}

#[test]
fn thousands_of_connect_join_disconnect_cycles_leave_nothing_behind() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.handshake_timeout = 2.0;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let cycles = scaled(2000);
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                let url = server.url();
                spawn(async move {
                    for i in (w..cycles).step_by(CONCURRENCY) {
                        cycle(url.clone(), i).await;
                    }
                })
            })
            .collect();
        for w in workers {
            join_task("a churn worker", w).await;
        }

        // Only the witnesses are left.
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1 + CHURN_ROOMS, "{stats:?}");

        // Every churner's nick is free again.
        for i in [0, 1, 2, 3, 4, 5, cycles - 1] {
            let nick = format!("ch{i}");
            let c = server.client(&nick).await;
            c.close().await;
        }
        let mut probe = server.client("probe").await;
        let rooms = probe.ok(json!({"type": "rooms"})).await;
        assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 2}]));
        probe.close().await;

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        // Each churner that joined the lobby was seen to join, then leave.
        let mut lobby_churners = 0;
        for i in (0..cycles).filter(|i| i % 4 == 0 && i % 7 != 6) {
            report.assert_joined_and_left(&format!("ch{i}"));
            lobby_churners += 1;
        }
        eprintln!("{cycles} cycles; {lobby_churners} churners passed through the lobby");
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1 + CHURN_ROOMS, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn a_flood_of_new_rooms_is_bounded_by_eviction_and_never_touches_a_room_with_members() {
    natter_runtime::block_on(async {
        const MAX_ROOMS: usize = 50;
        let mut config = Config::local();
        config.rate = 0;
        config.max_rooms = MAX_ROOMS;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;
        let mut early = server.client("early").await;
        let before = early.join("lobby").await;
        early.close().await;

        // Each creator makes room after room: join, say, leave.
        let creators = 4;
        let per_creator = scaled(500);
        let tasks: Vec<_> = (0..creators)
            .map(|w| {
                let url = server.url_nick(&format!("creator{w}"));
                spawn(async move {
                    let (mut c, _) = Client::connect(&url).await;
                    let mut first_epoch = None;
                    for k in 0..per_creator {
                        let room = format!("r{w}-{k}");
                        let joined = c.join(&room).await;
                        assert_eq!(joined["seq"], 0, "{room} is new: {joined}");
                        first_epoch.get_or_insert(joined["epoch"].clone());
                        c.say(&room, "mine").await;
                        c.ok(json!({"type": "leave", "room": room})).await;
                    }
                    // Long evicted, the first room comes back as a new one.
                    let again = c.join(&format!("r{w}-0")).await;
                    assert_eq!(again["seq"], 0, "{again}");
                    assert_ne!(Some(again["epoch"].clone()), first_epoch, "{again}");
                    c.close().await;
                })
            })
            .collect();
        for t in tasks {
            join_task("a room creator", t).await;
        }

        // At most MAX_ROOMS empty rooms, plus the lobby, which has members.
        let stats = settle(&server, 2, 2).await;
        assert!(stats.registry.rooms <= MAX_ROOMS + 1, "{stats:?}");
        // The witness room, busy all along, kept its numbering.
        let mut late = server.client("late").await;
        let after = late.join("lobby").await;
        assert_eq!(after["epoch"], before["epoch"], "{after}");
        assert!(after["seq"].as_u64() > before["seq"].as_u64(), "{after}");
        late.close().await;

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        let stats = settle(&server, 2, 2).await;
        assert!(stats.registry.rooms <= MAX_ROOMS + 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
