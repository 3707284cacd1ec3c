//! The connection cap: at the cap an upgrade gets 503 with Retry-After and
//! holds no slot; a slot freed by a disconnect can be used again.

use natter_tests::serde_json::json;
use natter_tests::{Client, Config, http_exchange, start, upgrade_request};

#[test]
fn at_the_cap_upgrades_get_503_and_a_freed_slot_comes_back() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.max_connections = 2;
        let server = start(config).await;
        let mut alice = server.client("alice").await;
        let bob = server.client("bob").await;
        assert_eq!(server.stats().await.slots_in_use, 2);

        for _ in 0..3 {
            let resp = http_exchange(
                server.addr(),
                upgrade_request("/ws?nick=carol", "").as_bytes(),
            )
            .await;
            assert_eq!(resp.status, 503, "{}", resp.head);
            let retry = resp
                .header("Retry-After")
                .unwrap_or_else(|| panic!("503 without Retry-After: {}", resp.head));
            assert!(retry.parse::<u64>().is_ok(), "Retry-After: {retry}");
        }
        // A WebSocket client is refused too.
        let refused = Client::try_connect(&server.url_nick("carol")).await;
        assert!(refused.is_err(), "third connection was accepted");
        // The refused sockets held no slot, and the two clients still work.
        assert_eq!(server.stats().await.slots_in_use, 2);
        assert_eq!(server.stats().await.registry.users, 2);
        alice.join("room").await;

        bob.close().await;
        server
            .wait_stats("bob's slot is released", |s| s.slots_in_use == 1)
            .await;
        let mut carol = server.client("carol").await;
        carol.join("room").await;
        let who = carol.ok(json!({"type": "who", "room": "room"})).await;
        assert_eq!(who["members"], json!(["alice", "carol"]));
        // Full again.
        let resp = http_exchange(server.addr(), upgrade_request("/ws", "").as_bytes()).await;
        assert_eq!(resp.status, 503, "{}", resp.head);
    })
}

#[test]
fn refused_handshakes_do_not_hold_slots() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.max_connections = 1;
        let server = start(config).await;
        // Bad requests use the slot only while they are answered.
        for _ in 0..5 {
            let resp = http_exchange(server.addr(), b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert_eq!(resp.status, 404);
        }
        server
            .wait_stats("slots free after refusals", |s| s.slots_in_use == 0)
            .await;
        let (c, _) = Client::connect(&server.url()).await;
        assert_eq!(server.stats().await.slots_in_use, 1);
        c.close().await;
        server.assert_idle().await;
    })
}
