//! The streamer's side of chat and titles (issue 4) through a running engine, against a real
//! Synapse (tests/matrix/synapse.sh) and real ffmpeg publishers: the room a stream gets, titles
//! both ways, chat both ways as engine events, live/ended notices, Go live / End stream, a
//! homeserver that does not answer, and titles that are never lost (issue 10).

use std::path::Path;
use std::time::Duration;

use onair_engine::{Config, EndReason, EngineEvent};
use onair_synapse::{PASSWORD, Raw, Synapse, own_synapse, synapse};
use onair_tests::*;
use serde_json::Value;
use tokio::sync::broadcast;

async fn next_event(
    rx: &mut broadcast::Receiver<EngineEvent>,
    within: Duration,
    mut pred: impl FnMut(&EngineEvent) -> bool,
) -> EngineEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended: {e}"),
            Err(_) => panic!("no matching engine event within {within:?}\n--- logs ---\n{}", logs()),
        }
    }
}

/// An engine logged in to the test Synapse as a fresh user; answers the server and the user's
/// localpart.
async fn streamer(stream: &str) -> (TestServer, String) {
    let hs = synapse();
    let user = hs.new_user("streamer");
    let mut config = Config { default_stream: stream.into(), ..Config::default() };
    config.matrix.homeserver = hs.base_url.clone();
    config.matrix.user = user.clone();
    let server = TestServer::start_matrix(config, PASSWORD).await;
    let control = server.control();
    wait_for("Matrix connected", Duration::from_secs(20), || {
        let state = control.matrix_state().to_string();
        async move { (state == "connected").then_some(()) }
    })
    .await;
    (server, user)
}

/// `/api/streams/<stream>` once its room is known.
async fn room_status(server: &TestServer, stream: &str) -> Value {
    wait_for("the stream's room", Duration::from_secs(20), || async {
        let v = get(&server.url(&format!("/api/streams/{stream}"))).await.ok()?.json();
        v["chat"]["room_id"].is_string().then_some(v)
    })
    .await
}

#[tokio::test]
async fn the_room_the_title_and_chat_both_ways() {
    let hs = synapse();
    let (server, user) = streamer("show").await;
    let control = server.control();
    let mut events = control.subscribe();

    // The page learns where the chat is.
    let v = room_status(&server, "show").await;
    let room_id = v["chat"]["room_id"].as_str().unwrap().to_owned();
    assert_eq!(v["chat"]["alias"], format!("#onair_show:{}", hs.server_name));
    assert_eq!(v["chat"]["homeserver"].as_str().unwrap().trim_end_matches('/'), hs.base_url.trim_end_matches('/'));
    assert_eq!(v["chat"]["status"], "connected");
    assert_eq!(v["title"], "show", "no title yet: the stream name");

    // A guest reads the room as set up for it.
    let guest = Raw::guest(&hs.base_url).await;
    let (code, state) = guest.state(&room_id, "m.room.guest_access").await;
    assert_eq!((code, state["guest_access"].as_str()), (200, Some("can_join")));

    // Title set in OnAir → the room name.
    control.set_title("show", "Speedrun Friday").await.unwrap();
    let (_, name) = guest.state(&room_id, "m.room.name").await;
    assert_eq!(name["name"], "Speedrun Friday");
    assert_eq!(get(&server.url("/api/streams/show")).await.unwrap().json()["title"], "Speedrun Friday");

    // The room name changed in another client → OnAir's title, pushed as an event.
    let other = Raw::login(&hs.base_url, &user, PASSWORD).await;
    other.set_name(&room_id, "Renamed elsewhere").await;
    let renamed = EngineEvent::Title { stream: "show".into(), title: "Renamed elsewhere".into() };
    next_event(&mut events, Duration::from_secs(15), |e| *e == renamed).await;
    assert_eq!(get(&server.url("/api/streams/show")).await.unwrap().json()["title"], "Renamed elsewhere");

    // A viewer (guest) writes → an engine chat event; the streamer writes → the room.
    guest.set_displayname("Viewer Vic").await;
    guest.join(&room_id).await;
    guest.send_text(&room_id, &format!("hello {user}!")).await;
    let ev = next_event(
        &mut events,
        Duration::from_secs(15),
        |e| matches!(e, EngineEvent::Chat { body, .. } if body.starts_with("hello")),
    )
    .await;
    let EngineEvent::Chat { stream, display_name, mentions_me, .. } = ev else { unreachable!() };
    assert_eq!((stream.as_str(), display_name.as_str(), mentions_me), ("show", "Viewer Vic", true));
    control.send_chat("show", "thanks for watching").await.unwrap();
    let (_, msgs) = guest.messages(&room_id).await;
    assert!(msgs.iter().any(|m| m["content"]["body"] == "thanks for watching" && m["sender"] == hs.user_id(&user)));
    server.shutdown().await;
}

#[tokio::test]
async fn notices_and_the_go_live_gate() {
    let hs = synapse();
    let (server, _user) = streamer("gated").await;
    let control = server.control();
    let mut events = control.subscribe();
    server.engine.registry().set_require_go_live(true);
    control.set_title("gated", "Late show").await.unwrap();
    let room_id = room_status(&server, "gated").await["chat"]["room_id"].as_str().unwrap().to_owned();
    let reader = Raw::guest(&hs.base_url).await;

    // Before Go live: refused, with the reason as an event.
    let mut refused = Publisher::start(&server.signed_url("gated"), &Source::small());
    let ev =
        next_event(&mut events, Duration::from_secs(20), |e| matches!(e, EngineEvent::PublishRefused { .. })).await;
    assert!(matches!(&ev, EngineEvent::PublishRefused { reason, .. } if reason.contains("Go live")), "{ev:?}");
    assert_eq!(refused.wait(Duration::from_secs(20)).await, Some(false), "ffmpeg gives up");

    // Go live: accepted, playable, and the live notice with the viewer link.
    control.go_live("gated").unwrap();
    let publisher = Publisher::start(&server.signed_url("gated"), &Source { seconds: Some(120.0), ..Source::small() });
    wait_live(&server, "gated", Duration::from_secs(20)).await;
    let link = control.viewer_url("gated");
    let notice = wait_for("the live notice", Duration::from_secs(20), || async {
        let (_, msgs) = reader.messages(&room_id).await;
        msgs.into_iter().find(|m| m["content"]["body"] == format!("🔴 Late show is live: {link}"))
    })
    .await;
    assert_eq!(notice["content"]["msgtype"], "m.notice");

    // End stream: the publisher is cut off, new publishes refused, the ended notice posted.
    control.end_stream("gated").unwrap();
    let ev = next_event(&mut events, Duration::from_secs(10), |e| matches!(e, EngineEvent::PublishEnded { .. })).await;
    assert_eq!(ev, EngineEvent::PublishEnded { stream: "gated".into(), reason: EndReason::EndedByStreamer });
    wait_for("the stream to go offline", Duration::from_secs(10), || async {
        (status_of(&server.url("/live/gated/playlist.m3u8")).await == 404).then_some(())
    })
    .await;
    wait_for("the ended notice", Duration::from_secs(20), || async {
        let (_, msgs) = reader.messages(&room_id).await;
        msgs.iter().any(|m| m["content"]["body"] == "⚫ Late show has ended.").then_some(())
    })
    .await;
    publisher.stop().await;
    let mut again = Publisher::start(&server.signed_url("gated"), &Source::small());
    assert_eq!(again.wait(Duration::from_secs(20)).await, Some(false), "refused until the next Go live");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_homeserver_is_reported_and_the_stream_still_plays() {
    // Nothing listens on this port: login cannot reach the homeserver.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = Config { default_stream: "solo".into(), ..Config::default() };
    config.matrix.homeserver = format!("http://{closed}");
    config.matrix.user = "@nobody:localhost".into();
    let server = TestServer::start_matrix(config, "whatever").await;
    let v = wait_for("the unreachable status", Duration::from_secs(20), || async {
        let v = get(&server.url("/api/streams/solo")).await.ok()?.json();
        v["chat"]["status"].as_str().is_some_and(|s| s.starts_with("unreachable")).then_some(v)
    })
    .await;
    assert_eq!(v["chat"]["alias"], "#onair_solo:localhost", "the alias is still known for the page");
    assert_eq!(v["chat"]["room_id"], Value::Null);
    assert_eq!(v["title"], "solo");
    // Titles still work (kept by OnAir); chat says why it cannot send.
    let control = server.control();
    control.set_title("solo", "Offline chat").await.unwrap();
    assert_eq!(get(&server.url("/api/streams/solo")).await.unwrap().json()["title"], "Offline chat");
    let err = control.send_chat("solo", "hi").await.unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    // The stream plays regardless.
    let publisher = Publisher::start(&server.signed_url("solo"), &Source::small());
    wait_live(&server, "solo", Duration::from_secs(20)).await;
    ffprobe(&server.url("/live/solo/llhls.m3u8")).await.expect("ffprobe reads the stream");
    publisher.stop().await;
    server.shutdown().await;
}

// ---------- titles are never lost (issue 10) ----------

/// An engine logged in to `hs` as `user`, `stream` its default stream, its state in `data_dir`.
async fn engine_on(hs: &Synapse, user: &str, stream: &str, data_dir: &Path) -> TestServer {
    let mut config = Config { default_stream: stream.into(), data_dir: data_dir.into(), ..Config::default() };
    config.matrix.homeserver = hs.base_url.clone();
    config.matrix.user = user.into();
    TestServer::start_matrix(config, PASSWORD).await
}

/// Waits until the room `room_id` is named `name` (read as another client of the streamer).
async fn wait_room_name(reader: &Raw, room_id: &str, name: &str, within: Duration) {
    wait_for(&format!("the room name {name:?}"), within, || async {
        (reader.room_name(room_id).await == name).then_some(())
    })
    .await
}

fn api_title(v: &Value) -> String {
    v["title"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_title_set_while_the_homeserver_is_down_reaches_the_room_when_it_is_back() {
    let hs = own_synapse("titles-down", false);
    let user = hs.new_user("outage");
    let server = engine_on(&hs, &user, "outage", &fresh_dir("data")).await;
    let control = server.control();
    let room_id = room_status(&server, "outage").await["chat"]["room_id"].as_str().unwrap().to_owned();
    control.set_title("outage", "Before the outage").await.unwrap();
    let reader = Raw::login(&hs.base_url, &user, PASSWORD).await;
    assert_eq!(reader.room_name(&room_id).await, "Before the outage");

    hs.stop();
    wait_for("Matrix to be reported unreachable", Duration::from_secs(30), || {
        let state = control.matrix_state().to_string();
        async move { state.starts_with("unreachable").then_some(()) }
    })
    .await;
    control.set_title("outage", "Set during the outage").await.expect("accepted: kept until Matrix is back");
    let v = get(&server.url("/api/streams/outage")).await.unwrap().json();
    assert_eq!(api_title(&v), "Set during the outage");

    let back = std::time::Instant::now();
    hs.resume();
    wait_room_name(&reader, &room_id, "Set during the outage", Duration::from_secs(30)).await;
    eprintln!("the room name followed {:.1} s after the homeserver came back", back.elapsed().as_secs_f64());
    // And OnAir's title was not overwritten by the older room name meanwhile.
    assert_eq!(control.title("outage"), "Set during the outage");
    server.shutdown().await;
}

#[tokio::test]
async fn a_title_set_in_the_first_moment_after_start_reaches_the_room() {
    let hs = synapse();
    let user = hs.new_user("early");
    // The stream's room exists already, under an older name (from an earlier run, say).
    let owner = Raw::login(&hs.base_url, &user, PASSWORD).await;
    let room_id = owner.create_room("onair_early", "An older name").await;

    let server = engine_on(hs, &user, "early", &fresh_dir("data")).await;
    let control = server.control();
    assert_ne!(control.matrix_state().to_string(), "connected", "the Matrix session is not ready yet");
    control.set_title("early", "Set in the first moment").await.unwrap();

    // The room is found (not created), and gets the new title.
    let v = room_status(&server, "early").await;
    assert_eq!(v["chat"]["room_id"], room_id.as_str());
    wait_room_name(&owner, &room_id, "Set in the first moment", Duration::from_secs(20)).await;
    assert_eq!(api_title(&get(&server.url("/api/streams/early")).await.unwrap().json()), "Set in the first moment");
    assert_eq!(control.title("early"), "Set in the first moment");
    server.shutdown().await;
}

#[tokio::test]
async fn a_room_renamed_while_onair_is_stopped_is_adopted_only_if_newer() {
    let hs = own_synapse("titles-offline", false);
    let user = hs.new_user("offline");
    let data = fresh_dir("data");
    let other = Raw::login(&hs.base_url, &user, PASSWORD).await;

    // A first run: the room gets OnAir's title.
    let server = engine_on(&hs, &user, "away", &data).await;
    let room_id = room_status(&server, "away").await["chat"]["room_id"].as_str().unwrap().to_owned();
    server.control().set_title("away", "OnAir's first title").await.unwrap();
    assert_eq!(other.room_name(&room_id).await, "OnAir's first title");
    server.shutdown().await;

    // Renamed elsewhere while OnAir is stopped: newer than OnAir's title, so adopted at start.
    other.set_name(&room_id, "Renamed while OnAir was off").await;
    let server = engine_on(&hs, &user, "away", &data).await;
    let control = server.control();
    wait_for("the newer room name to be adopted", Duration::from_secs(30), || {
        let title = control.title("away");
        async move { (title == "Renamed while OnAir was off").then_some(()) }
    })
    .await;
    assert_eq!(other.room_name(&room_id).await, "Renamed while OnAir was off", "the room keeps its name");
    assert_eq!(api_title(&get(&server.url("/api/streams/away")).await.unwrap().json()), "Renamed while OnAir was off");
    server.shutdown().await;

    // Renamed elsewhere, then OnAir's title set later while the homeserver is down (and OnAir
    // stopped before it came back): the room's name is older, so OnAir's title wins at start.
    other.set_name(&room_id, "An older rename").await;
    hs.stop();
    let server = engine_on(&hs, &user, "away", &data).await;
    server.control().set_title("away", "Set while the homeserver was down").await.unwrap();
    server.shutdown().await;
    hs.resume();
    let server = engine_on(&hs, &user, "away", &data).await;
    wait_room_name(&other, &room_id, "Set while the homeserver was down", Duration::from_secs(30)).await;
    let control = server.control();
    assert_eq!(control.title("away"), "Set while the homeserver was down");
    assert_eq!(
        api_title(&get(&server.url("/api/streams/away")).await.unwrap().json()),
        "Set while the homeserver was down"
    );
    server.shutdown().await;
}
