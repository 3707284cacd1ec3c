//! The server's counters: every way a connection can end gives back its
//! slot, its task and its registry entries.

use async_tungstenite::tungstenite::Message;
use natter_tests::serde_json::json;
use natter_tests::{Client, Config, start};

#[test]
fn counters_return_to_zero_however_connections_end() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.max_message_bytes = 1024;
        let server = start(config).await;
        let mut clients = Vec::new();
        for i in 0..6 {
            let mut c = server.client(&format!("u{i}")).await;
            c.join("a").await;
            c.join(&format!("own{i}")).await;
            c.say("a", "hello").await;
            clients.push(c);
        }
        let stats = server.stats().await;
        assert_eq!(stats.slots_in_use, 6, "{stats:?}");
        assert_eq!(stats.tasks, 6, "{stats:?}");
        assert_eq!(stats.registry.users, 6, "{stats:?}");
        assert_eq!(stats.registry.rooms, 7, "{stats:?}");
        assert_eq!(stats.registry.memberships, 12, "{stats:?}");

        let mut it = clients.into_iter();
        // A clean close.
        it.next().unwrap().close().await;
        // An abrupt drop.
        drop(it.next().unwrap());
        // Closed by the server: binary, oversize, invalid UTF-8.
        let mut c = it.next().unwrap();
        c.send_raw(Message::binary(vec![1, 2, 3])).await;
        assert_eq!(c.expect_close().await.0, 1003);
        drop(c);
        let mut c = it.next().unwrap();
        c.send_text(&"x".repeat(2000)).await;
        assert_eq!(c.expect_close().await.0, 1009);
        drop(c);
        let mut c = it.next().unwrap();
        c.send_raw(Message::Frame(
            async_tungstenite::tungstenite::protocol::frame::Frame::message(
                vec![0xc0, 0x80],
                async_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    async_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                ),
                true,
            ),
        ))
        .await;
        assert_eq!(c.expect_close().await.0, 1007);
        drop(c);
        // Leaves its rooms first, then closes.
        let mut c = it.next().unwrap();
        c.ok(json!({"type": "leave", "room": "a"})).await;
        c.close().await;

        server.assert_idle().await;
        // Rooms are retained (with their numbering) though nobody is in them.
        let stats = server.stats().await;
        assert_eq!(stats.registry.rooms, 7, "{stats:?}");
        let (mut c, _) = Client::connect(&server.url()).await;
        let reply = c.join("a").await;
        assert_eq!(reply["seq"], 6);
        assert_eq!(reply["members"].as_array().unwrap().len(), 1);
    })
}
