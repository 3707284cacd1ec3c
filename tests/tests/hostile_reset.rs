//! Members that vanish in the middle of a burst without a close: their
//! socket is reset (SO_LINGER 0, then dropped: the kernel sends RST, not
//! FIN). The room hears each one `leave`, whatever of their burst the server
//! read reaches the room as an in-order prefix, and their slots come back.
//! Also: sockets reset halfway through the upgrade request.

use async_tungstenite::tungstenite::Message;
use futures::AsyncWriteExt;
use natter_runtime::spawn;
use natter_tests::hostile::{Rng, Witness, WitnessOpts, scaled, set_linger_zero, settle};
use natter_tests::serde_json::json;
use natter_tests::{Config, bounded, join_task, start};

/// Messages in each ghost's burst (some unsent when it vanishes).
const BURST: usize = 200;
/// Rooms every ghost is in besides the lobby and its own.
const SHARED_ROOMS: usize = 20;

#[test]
fn members_reset_mid_burst_leave_their_rooms_and_free_their_slots() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;

        let ghosts: Vec<String> = (0..scaled(8)).map(|i| format!("ghost{i}")).collect();
        let mut rng = Rng::new(7);
        let mut tasks = Vec::new();
        for nick in &ghosts {
            let mut c = server.client(nick).await;
            c.join("lobby").await;
            // Many memberships to clean up: its own room and shared ones.
            c.join(&format!("{nick}-own")).await;
            for k in 0..SHARED_ROOMS {
                c.join(&format!("shared{k}")).await;
            }
            // Vanish after a random part of the burst: pipelined, unread.
            let cut = rng.below(BURST as u64) as usize;
            let nick = nick.clone();
            tasks.push(spawn(async move {
                for i in 0..BURST {
                    if i == cut {
                        c.flush().await;
                        c.reset();
                        return;
                    }
                    let say = json!({"type": "say", "room": "lobby", "text": format!("{nick} {i}"), "id": i});
                    c.feed_raw(Message::text(say.to_string())).await;
                }
                c.flush().await;
                c.reset();
            }));
        }
        for t in tasks {
            join_task("a ghost's burst", t).await;
        }

        // Sockets reset halfway through the upgrade request.
        let addr = server.addr();
        let half_upgrades: Vec<_> = (0..scaled(8))
            .map(|_| {
                spawn(async move {
                    let mut tcp = bounded("connect", natter_runtime::connect(addr))
                        .await
                        .expect("connect");
                    let req = natter_tests::upgrade_request("/ws?nick=halfway", "");
                    bounded("write", tcp.write_all(&req.as_bytes()[..req.len() / 2]))
                        .await
                        .expect("write half a request");
                    set_linger_zero(&tcp).expect("SO_LINGER 0");
                    drop(tcp);
                })
            })
            .collect();
        for t in half_upgrades {
            join_task("a socket reset mid-upgrade", t).await;
        }

        // Everything the ghosts held is given back.
        let stats = settle(&server, 2, 2).await;
        // Their own rooms are retained, empty (rooms keep their numbering).
        assert_eq!(
            stats.registry.rooms,
            1 + ghosts.len() + SHARED_ROOMS,
            "{stats:?}"
        );

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        for nick in &ghosts {
            report.assert_joined_and_left(nick);
            let texts = report.texts_from(nick);
            let prefix: Vec<String> = (0..texts.len()).map(|i| format!("{nick} {i}")).collect();
            assert_eq!(texts, prefix, "{nick}'s burst, as the room got it");
        }
        let presences = report.listener_track.presences.len();
        assert_eq!(
            presences,
            2 * ghosts.len() + 1,
            "presence events the witness saw"
        );
        report.close().await;
        server.assert_idle().await;
    })
}
