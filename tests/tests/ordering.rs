//! One order per room under concurrency: every member sees the same
//! gap-free seq order, and each sender's messages keep their send order.

use async_tungstenite::tungstenite::Message;
use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, is_reply, join_task, start};

const SENDERS: usize = 4;
const LISTENERS: usize = 3;
const PER_SENDER: usize = 50;
const TOTAL: usize = SENDERS * PER_SENDER;

/// (seq, from, text) of each message event, in arrival order.
type Log = Vec<(u64, String, String)>;

fn entry(v: &Value) -> (u64, String, String) {
    (
        v["seq"].as_u64().unwrap_or_else(|| panic!("{v}")),
        v["from"].as_str().unwrap().to_owned(),
        v["text"].as_str().unwrap().to_owned(),
    )
}

/// Reads until `TOTAL` message events of `room` have arrived.
async fn read_messages(c: &mut Client, room: &str, mut log: Log) -> Log {
    while log.len() < TOTAL {
        let v = c.recv().await;
        if v["type"] == "message" {
            assert_eq!(v["room"], room, "{v}");
            log.push(entry(&v));
        } else {
            assert!(
                v["type"] == "presence" || is_reply(&v),
                "unexpected frame {v}"
            );
        }
    }
    log
}

#[test]
fn concurrent_senders_and_listeners_agree_on_one_gap_free_order() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.history = TOTAL;
        let server = start(config).await;

        let mut listeners = Vec::new();
        for i in 0..LISTENERS {
            let mut c = server.client(&format!("listener{i}")).await;
            c.join("room").await;
            listeners.push(c);
        }
        let mut senders = Vec::new();
        for i in 0..SENDERS {
            let mut c = server.client(&format!("sender{i}")).await;
            let reply = c.join("room").await;
            assert_eq!(reply["seq"], 0);
            senders.push(c);
        }

        let listener_tasks: Vec<_> = listeners
            .into_iter()
            .map(|mut c| {
                natter_runtime::spawn(
                    async move { read_messages(&mut c, "room", Vec::new()).await },
                )
            })
            .collect();
        let sender_tasks: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                natter_runtime::spawn(async move {
                    let me = format!("sender{i}");
                    // Pipeline all 50 says, then read the replies.
                    for k in 0..PER_SENDER {
                        let req = json!({"type": "say", "room": "room", "text": format!("{me}:{k}"), "id": k});
                        c.feed_raw(Message::text(req.to_string())).await;
                        if k % 10 == 9 {
                            c.flush().await;
                        }
                    }
                    c.flush().await;
                    let mut seqs = Vec::new();
                    let mut log = Log::new();
                    while seqs.len() < PER_SENDER {
                        let v = c.recv().await;
                        if is_reply(&v) {
                            assert_eq!(v["type"], "ok", "{v}");
                            assert_eq!(v["id"], seqs.len(), "replies out of order: {v}");
                            seqs.push(v["seq"].as_u64().unwrap());
                        } else if v["type"] == "message" {
                            log.push(entry(&v));
                        }
                    }
                    let log = read_messages(&mut c, "room", log).await;
                    (me, seqs, log)
                })
            })
            .collect();

        let mut logs = Vec::new();
        for t in listener_tasks {
            logs.push(join_task("listener", t).await);
        }
        let mut reply_seqs = Vec::new();
        for t in sender_tasks {
            let (me, seqs, log) = join_task("sender", t).await;
            // A sender's later say gets a higher seq.
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{me}: {seqs:?}");
            // The sender saw each of its own messages, with the seq of its ok.
            let own: Vec<u64> = log
                .iter()
                .filter(|(_, f, _)| *f == me)
                .map(|e| e.0)
                .collect();
            assert_eq!(own, seqs, "{me}'s own message events");
            reply_seqs.extend(seqs);
            logs.push(log);
        }
        reply_seqs.sort_unstable();
        assert_eq!(reply_seqs, (1..=TOTAL as u64).collect::<Vec<_>>());

        let reference = logs[0].clone();
        let seqs: Vec<u64> = reference.iter().map(|e| e.0).collect();
        assert_eq!(
            seqs,
            (1..=TOTAL as u64).collect::<Vec<_>>(),
            "gap-free seq order"
        );
        for (i, log) in logs.iter().enumerate() {
            assert_eq!(log, &reference, "member {i} saw another order");
        }
        for i in 0..SENDERS {
            let me = format!("sender{i}");
            let texts: Vec<&str> = reference
                .iter()
                .filter(|(_, f, _)| *f == me)
                .map(|(_, _, t)| t.as_str())
                .collect();
            let want: Vec<String> = (0..PER_SENDER).map(|k| format!("{me}:{k}")).collect();
            assert_eq!(texts, want, "{me}'s messages out of send order");
        }
        // History agrees with what was delivered.
        let mut late = server.client("late").await;
        let reply = late
            .ok(json!({"type": "join", "room": "room", "since": 0}))
            .await;
        let history: Log = reply["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(entry)
            .collect();
        assert_eq!(history, reference);
        assert_eq!(reply["complete"], true);
    })
}

#[test]
fn presence_and_messages_keep_one_relative_order_for_every_member() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let server = start(config).await;
        let mut a = server.client("a").await;
        let mut b = server.client("b").await;
        a.join("room").await;
        b.join("room").await;
        a.recv().await; // b's join

        // a talks (pipelined: its replies are read below, with the events)
        // while c joins, renames and leaves, concurrently.
        let talker = natter_runtime::spawn(async move {
            for k in 0..40 {
                let req = json!({"type": "say", "room": "room", "text": format!("t{k}")});
                a.send_json(&req).await;
            }
            a
        });
        let mut c = server.client("c").await;
        c.join("room").await;
        c.ok(json!({"type": "nick", "nick": "c2"})).await;
        c.ok(json!({"type": "leave", "room": "room"})).await;
        let mut a = join_task("talker", talker).await;

        // Both remaining members see the same interleaving.
        let mut logs = Vec::new();
        for m in [&mut a, &mut b] {
            let mut log = Vec::new();
            let mut messages = 0;
            let mut presences = 0;
            while messages < 40 || presences < 3 {
                let v = m.recv().await;
                match v["type"].as_str() {
                    Some("message") => {
                        messages += 1;
                        log.push(format!("m{}", v["seq"]));
                    }
                    Some("presence") => {
                        presences += 1;
                        log.push(format!(
                            "{}:{}",
                            v["event"].as_str().unwrap(),
                            v["nick"].as_str().unwrap()
                        ));
                    }
                    _ => {}
                }
            }
            logs.push(log);
        }
        assert_eq!(logs[0], logs[1]);
        let p: Vec<&String> = logs[0].iter().filter(|e| !e.starts_with('m')).collect();
        assert_eq!(p, ["join:c", "rename:c2", "leave:c2"]);
        let m: Vec<&String> = logs[0].iter().filter(|e| e.starts_with('m')).collect();
        let want: Vec<String> = (1..=40).map(|i| format!("m{i}")).collect();
        assert_eq!(m, want.iter().collect::<Vec<_>>());
    })
}

#[test]
fn members_joining_and_leaving_mid_stream_see_exactly_their_window_and_recover_the_rest() {
    natter_runtime::block_on(async {
        const MESSAGES: u64 = 300;
        let mut config = Config::local();
        config.rate = 0;
        config.history = 1000;
        let server = start(config).await;
        let mut talker = server.client("talker").await;
        let first = talker.join("room").await;
        let epoch = first["epoch"].clone();

        let talk = natter_runtime::spawn(async move {
            for i in 1..=MESSAGES {
                assert_eq!(talker.say("room", &format!("t{i}")).await, i);
            }
            talker
        });

        let mut c = server.client("hopper").await;
        let mut last_seen: Option<u64> = None;
        for _cycle in 0..8 {
            let mut req = json!({"type": "join", "room": "room"});
            if let Some(n) = last_seen {
                req["since"] = json!(n);
                req["epoch"] = epoch.clone();
            }
            let (reply, events) = c.request(req).await;
            assert_eq!(reply["type"], "ok", "{reply}");
            let join_seq = reply["seq"].as_u64().unwrap();
            let history: Vec<u64> = reply["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap())
                .collect();
            if let Some(n) = last_seen {
                // Recovery: exactly what was missed while away.
                assert_eq!(history, (n + 1..=join_seq).collect::<Vec<_>>());
                assert_eq!(reply["complete"], true, "{reply}");
            }
            // Own join first; then only messages after the join's seq.
            assert_eq!(events[0]["type"], "presence", "{events:?}");
            assert_eq!(
                (&events[0]["event"], &events[0]["nick"]),
                (&json!("join"), &json!("hopper"))
            );
            let mut seen: Vec<u64> = events[1..]
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "message", "{e}");
                    e["seq"].as_u64().unwrap()
                })
                .collect();
            let (reply, events) = c.request(json!({"type": "leave", "room": "room"})).await;
            assert_eq!(reply["type"], "ok", "{reply}");
            let (own_leave, after) = events
                .iter()
                .position(|e| e["type"] == "presence")
                .map(|i| (&events[i], &events[i + 1..]))
                .expect("no own leave");
            assert_eq!(
                (&own_leave["event"], &own_leave["nick"]),
                (&json!("leave"), &json!("hopper"))
            );
            assert!(after.is_empty(), "frames after the own leave: {after:?}");
            seen.extend(
                events
                    .iter()
                    .take_while(|e| e["type"] == "message")
                    .map(|e| e["seq"].as_u64().unwrap()),
            );
            let want: Vec<u64> = (join_seq + 1..=join_seq + seen.len() as u64).collect();
            assert_eq!(seen, want, "a gap while a member (joined at {join_seq})");
            last_seen = Some(join_seq + seen.len() as u64);
        }
        let _talker = join_task("talker", talk).await;
        // Whatever was missed at the end is recovered too.
        let n = last_seen.unwrap();
        let reply = c
            .ok(json!({"type": "join", "room": "room", "since": n, "epoch": epoch}))
            .await;
        let history: Vec<u64> = reply["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(history, (n + 1..=MESSAGES).collect::<Vec<_>>());
        assert_eq!(reply["complete"], true);
    })
}
