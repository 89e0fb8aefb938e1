//! The homeserver goes down and comes back: a clear status, errors instead of panics, and a
//! reconnect without help. Its own test binary, because it stops its Synapse.

mod common;

use std::time::{Duration, Instant};

use common::{PASSWORD, Raw, config, next_event, synapse, wait_status};
use onair_matrix::{Chat, ChatEvent, Error, MatrixConfig, MatrixStatus, MemoryStore};

#[tokio::test]
async fn homeserver_down_then_back() {
    let hs = synapse();
    let name = hs.new_user("streamer");
    let store = MemoryStore::default();
    let chat = Chat::login(config(&name), PASSWORD, &store).await.expect("login");
    let room = chat.ensure_room("down").await.expect("ensure_room");
    let mut events = chat.subscribe();
    let mut status = chat.watch_status();
    chat.start_sync();
    wait_status(&mut status, Duration::from_secs(10), |s| *s == MatrixStatus::Connected).await.expect("connected");

    hs.stop();
    let down = wait_status(&mut status, Duration::from_secs(15), |s| matches!(s, MatrixStatus::Unreachable(_)))
        .await
        .expect("status turns Unreachable");
    let MatrixStatus::Unreachable(reason) = &down else { unreachable!() };
    eprintln!("status while down: {down}");
    assert!(reason.contains("Connection refused"), "{reason}");

    // Calls fail with a clear error, promptly.
    let started = Instant::now();
    let err = chat.set_title("down", "nobody hears this").await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("unreachable") && err.to_string().contains(&hs.base_url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(chat.send("down", "hello?").await, Err(Error::Unreachable { .. })));
    assert!(matches!(chat.ensure_room("other").await, Err(Error::Unreachable { .. })));

    // Logging in fails clearly; restoring needs no network and reports the outage once syncing.
    let err = Chat::login(config(&name), PASSWORD, &MemoryStore::default()).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let restored = Chat::restore(config(&name), &store).await.expect("restore offline").expect("a session");
    let mut restored_status = restored.watch_status();
    restored.start_sync();
    wait_status(&mut restored_status, Duration::from_secs(15), |s| matches!(s, MatrixStatus::Unreachable(_)))
        .await
        .expect("the restored session reports the outage");

    // Back: the sync reconnects by itself and chat flows again.
    let back = Instant::now();
    hs.resume();
    wait_status(&mut status, Duration::from_secs(40), |s| *s == MatrixStatus::Connected).await.expect("reconnected");
    eprintln!("reconnected {:.1} s after restarting the homeserver", back.elapsed().as_secs_f64());
    wait_status(&mut restored_status, Duration::from_secs(40), |s| *s == MatrixStatus::Connected)
        .await
        .expect("the restored session connects");
    let viewer = Raw::login(&hs.base_url, &hs.new_user("viewer"), PASSWORD).await;
    viewer.join(&room.room_id).await;
    let sent = viewer.send_text(&room.room_id, "back again").await;
    let ev = next_event(&mut events, Duration::from_secs(10), |e| matches!(e, ChatEvent::Message { .. })).await;
    assert!(matches!(ev, Some(ChatEvent::Message { event_id, .. }) if event_id == sent));
    chat.set_title("down", "we are back").await.expect("set_title after the outage");
}

#[tokio::test]
async fn nothing_listens_at_the_configured_address() {
    // A port nobody listens on: a clear error, never a hang or a panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = MatrixConfig::new(format!("http://127.0.0.1:{port}"), "me");
    let started = Instant::now();
    let err = Chat::login(config.clone(), "pw", &MemoryStore::default()).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        Chat::login(MatrixConfig::new("", "me"), "pw", &MemoryStore::default()).await,
        Err(Error::Config(_))
    ));
}
