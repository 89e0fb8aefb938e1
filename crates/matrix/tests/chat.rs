//! Against a real Synapse: rooms, titles, chat both ways, guests, notices, sessions.

mod common;

use std::time::Duration;

use common::{PASSWORD, Raw, config, enc, next_event, synapse, wait_status};
use onair_matrix::{Chat, ChatEvent, Error, MatrixConfig, MatrixStatus, MemoryStore, SESSION_ENTRY, SessionStore};
use serde_json::Value;

const SOON: Duration = Duration::from_secs(10);

async fn streamer() -> (Chat, String, MemoryStore) {
    let hs = synapse();
    let name = hs.new_user("streamer");
    let store = MemoryStore::default();
    let chat = Chat::login(config(&name), PASSWORD, &store).await.expect("login");
    (chat, name, store)
}

#[tokio::test]
async fn a_new_room_is_set_up_for_guests_and_listed() {
    let hs = synapse();
    let (chat, name, _store) = streamer().await;
    let room = chat.ensure_room("show").await.expect("ensure_room");
    assert!(room.created);
    assert_eq!(room.alias, format!("#onair_show:{}", hs.server_name));
    assert_eq!(chat.status(), MatrixStatus::Connected);

    // Idempotent: the same room again, found rather than created.
    let again = chat.ensure_room("show").await.expect("ensure_room again");
    assert_eq!(again.room_id, room.room_id);
    assert!(!again.created);

    // The state, as any other client sees it.
    let other = Raw::login(&hs.base_url, &name, PASSWORD).await;
    let (_, join_rules) = other.state(&room.room_id, "m.room.join_rules").await;
    assert_eq!(join_rules["join_rule"], "public");
    let (_, history) = other.state(&room.room_id, "m.room.history_visibility").await;
    assert_eq!(history["history_visibility"], "world_readable");
    let (_, guests) = other.state(&room.room_id, "m.room.guest_access").await;
    assert_eq!(guests["guest_access"], "can_join");
    let (_, room_name) = other.state(&room.room_id, "m.room.name").await;
    assert_eq!(room_name["name"], "show");
    let (_, canonical) = other.state(&room.room_id, "m.room.canonical_alias").await;
    assert_eq!(canonical["alias"], room.alias);

    // The alias resolves, for anyone.
    let anyone = Raw::anonymous(&hs.base_url);
    let resolved = anyone.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&room.alias)), None).await;
    assert_eq!(resolved["room_id"], room.room_id.as_str());

    // Listed in the public room directory, readable without an account.
    let listed =
        anyone.ok("GET", &format!("/_matrix/client/v3/directory/list/room/{}", enc(&room.room_id)), None).await;
    assert_eq!(listed["visibility"], "public");
    let public = anyone.ok("GET", "/_matrix/client/v3/publicRooms?limit=500", None).await;
    let entry = public["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room.room_id.as_str())
        .expect("room in the public directory");
    assert_eq!(entry["world_readable"], true);
    assert_eq!(entry["guest_can_join"], true);
}

#[tokio::test]
async fn a_room_the_directory_refuses_still_works_unlisted() {
    // synapse.sh denies directory publication of aliases `#onair_unlisted*`.
    let hs = synapse();
    let (chat, _, _store) = streamer().await;
    let room = chat.ensure_room("unlisted").await.expect("ensure_room");
    assert!(room.created);
    let anyone = Raw::anonymous(&hs.base_url);
    let listed =
        anyone.ok("GET", &format!("/_matrix/client/v3/directory/list/room/{}", enc(&room.room_id)), None).await;
    assert_eq!(listed["visibility"], "private");
    let guest = Raw::guest(&hs.base_url).await;
    let (status, _) = guest.messages(&room.room_id).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_cactus_preset_uses_the_cactus_alias() {
    let hs = synapse();
    let name = hs.new_user("cactus");
    let store = MemoryStore::default();
    let config = MatrixConfig::cactus(&hs.base_url, &name, "myblog");
    let chat = Chat::login(config, PASSWORD, &store).await.expect("login");
    assert_eq!(chat.alias_for("talk").unwrap(), format!("#comments_myblog_talk:{}", hs.server_name));
    let room = chat.ensure_room("talk").await.expect("ensure_room");
    assert_eq!(room.alias, format!("#comments_myblog_talk:{}", hs.server_name));
    let resolved = Raw::anonymous(&hs.base_url)
        .ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&room.alias)), None)
        .await;
    assert_eq!(resolved["room_id"], room.room_id.as_str());

    // An existing room (created by Cactus, or by someone else) is joined and used as it is.
    let other_name = hs.new_user("cactus");
    let other =
        Chat::login(MatrixConfig::cactus(&hs.base_url, &other_name, "myblog"), PASSWORD, &MemoryStore::default())
            .await
            .expect("login");
    let found = other.ensure_room("talk").await.expect("ensure_room of an existing room");
    assert_eq!(found.room_id, room.room_id);
    assert!(!found.created);
}

#[tokio::test]
async fn the_title_is_the_room_name_both_ways() {
    let hs = synapse();
    let (chat, name, _store) = streamer().await;
    let room = chat.ensure_room("title").await.expect("ensure_room");
    let mut events = chat.subscribe();
    chat.start_sync();

    // OnAir → Matrix.
    let set_at = chat.set_title("title", "Friday night coding").await.expect("set_title");
    let other = Raw::login(&hs.base_url, &name, PASSWORD).await; // the streamer's own Element, say
    let (_, state) = other.state(&room.room_id, "m.room.name").await;
    assert_eq!(state["name"], "Friday night coding");
    let before = chat.title("title").await.unwrap().expect("a name");
    assert_eq!(before.name, "Friday night coding");
    let set_at = set_at.expect("when the name was set, by the homeserver");
    assert_eq!(before.ts_ms, Some(set_at), "the name event's time (`?format=event`)");

    // Matrix → OnAir, within seconds, with the event's time; OnAir's own change above is not
    // echoed back.
    let started = std::time::Instant::now();
    other.set_name(&room.room_id, "Renamed in Element").await;
    let ev = next_event(&mut events, SOON, |e| matches!(e, ChatEvent::TitleChanged { .. })).await;
    let Some(ChatEvent::TitleChanged { stream, title, ts_ms }) = ev else { panic!("{ev:?}") };
    assert_eq!((stream.as_str(), title.as_str()), ("title", "Renamed in Element"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let now = chat.title("title").await.unwrap().expect("a name");
    assert_eq!(now, onair_matrix::RoomName { name: "Renamed in Element".into(), ts_ms: Some(ts_ms) });
    assert!(ts_ms >= set_at, "{ts_ms} < {set_at}");

    // A room created for a title: named with it from the start.
    let named = chat.ensure_room_named("titled", "Named at birth").await.expect("ensure_room_named");
    assert!(named.created);
    let (_, state) = other.state(&named.room_id, "m.room.name").await;
    assert_eq!(state["name"], "Named at birth");
}

#[tokio::test]
async fn chat_flows_both_ways() {
    let hs = synapse();
    let (chat, name, _store) = streamer().await;
    let room = chat.ensure_room("chat").await.expect("ensure_room");
    let mut events = chat.subscribe();
    chat.start_sync();

    // Someone in their own Matrix app.
    let viewer_name = hs.new_user("viewer");
    let viewer = Raw::login(&hs.base_url, &viewer_name, PASSWORD).await;
    viewer.set_displayname("Vera Viewer").await;
    viewer.join(&room.alias).await;
    let sent = viewer.send_text(&room.room_id, "hello from Element").await;
    let ev =
        next_event(&mut events, SOON, |e| matches!(e, ChatEvent::Message { sender, .. } if *sender == viewer.user_id))
            .await
            .expect("the viewer's message reaches OnAir");
    let ChatEvent::Message { stream, event_id, display_name, body, ts_ms, .. } = ev else { unreachable!() };
    assert_eq!((stream.as_str(), event_id.as_str(), display_name.as_str()), ("chat", sent.as_str(), "Vera Viewer"));
    assert_eq!(body, "hello from Element");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(ts_ms.abs_diff(now_ms) < 60_000);

    // The streamer writes from OnAir; the viewer reads it.
    let mine = chat.send("chat", "welcome, Vera").await.expect("send");
    let (_, chunk) = viewer.messages(&room.room_id).await;
    let found = chunk.iter().find(|e| e["event_id"] == mine.as_str()).expect("OnAir's message in /messages");
    assert_eq!(found["sender"], hs.user_id(&name));
    assert_eq!(found["content"]["body"], "welcome, Vera");
    assert_eq!(found["content"]["msgtype"], "m.text");
    // And OnAir sees its own message as chat too.
    let own =
        next_event(&mut events, SOON, |e| matches!(e, ChatEvent::Message { event_id, .. } if *event_id == mine)).await;
    assert!(own.is_some());
}

#[tokio::test]
async fn a_guest_reads_unjoined_then_joins_and_writes() {
    // What the viewer page will do, with no account of its own.
    let hs = synapse();
    let (chat, _, _store) = streamer().await;
    let room = chat.ensure_room("guests").await.expect("ensure_room");
    chat.set_title("guests", "Open to all").await.unwrap();
    let before = chat.send("guests", "history for guests").await.unwrap();
    let mut events = chat.subscribe();
    chat.start_sync();

    let guest = Raw::guest(&hs.base_url).await;
    let resolved = guest.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&room.alias)), None).await;
    assert_eq!(resolved["room_id"], room.room_id.as_str());
    let (status, chunk) = guest.messages(&room.room_id).await;
    assert_eq!(status, 200, "a guest reads a world_readable room without joining");
    assert!(chunk.iter().any(|e| e["event_id"] == before.as_str()));
    let (status, name) = guest.state(&room.room_id, "m.room.name").await;
    assert_eq!((status, name["name"].as_str()), (200, Some("Open to all")));

    guest.set_displayname("Guest 42").await;
    guest.join(&room.room_id).await;
    guest.send_text(&room.room_id, "hi from the viewer page").await;
    let ev =
        next_event(&mut events, SOON, |e| matches!(e, ChatEvent::Message { sender, .. } if *sender == guest.user_id))
            .await
            .expect("the guest's message reaches OnAir");
    let ChatEvent::Message { display_name, body, .. } = ev else { unreachable!() };
    assert_eq!((display_name.as_str(), body.as_str()), ("Guest 42", "hi from the viewer page"));
}

#[tokio::test]
async fn live_notices() {
    let hs = synapse();
    let (chat, name, _store) = streamer().await;
    let room = chat.ensure_room("notices").await.expect("ensure_room");
    let reader = Raw::login(&hs.base_url, &name, PASSWORD).await;

    let id = chat.notice_live("notices", "Speedrun", "https://tv.example/notices").await.unwrap().expect("sent");
    let ev = reader.event(&room.room_id, &id).await;
    assert_eq!(ev["content"]["msgtype"], "m.notice");
    assert_eq!(ev["content"]["body"], "🔴 Speedrun is live: https://tv.example/notices");
    assert!(ev["content"]["m.mentions"]["room"] != Value::Bool(true));

    let id = chat.notice_ended("notices", "Speedrun").await.unwrap().expect("sent");
    let ev = reader.event(&room.room_id, &id).await;
    assert_eq!(ev["content"]["msgtype"], "m.notice");
    assert_eq!(ev["content"]["body"], "⚫ Speedrun has ended.");

    // With @room: a plain message (notices never notify) carrying a room mention.
    let mut loud_config = config(&name);
    loud_config.mention_room = true;
    let loud = Chat::login(loud_config, PASSWORD, &MemoryStore::default()).await.unwrap();
    let id = loud.notice_live("notices", "Speedrun", "https://tv.example/notices").await.unwrap().expect("sent");
    let ev = reader.event(&room.room_id, &id).await;
    assert_eq!(ev["content"]["msgtype"], "m.text");
    assert_eq!(ev["content"]["body"], "@room 🔴 Speedrun is live: https://tv.example/notices");
    assert_eq!(ev["content"]["m.mentions"]["room"], true);

    // Off: nothing is posted.
    let mut quiet_config = config(&name);
    quiet_config.notify_live = false;
    let quiet = Chat::login(quiet_config, PASSWORD, &MemoryStore::default()).await.unwrap();
    assert_eq!(quiet.notice_live("notices", "Speedrun", "https://tv.example/notices").await.unwrap(), None);
    assert_eq!(quiet.notice_ended("notices", "Speedrun").await.unwrap(), None);
}

#[tokio::test]
async fn the_session_is_restored_without_logging_in_again() {
    let hs = synapse();
    let (chat, name, store) = streamer().await;
    let device = chat.device_id();
    let room = chat.ensure_room("restore").await.unwrap();
    let saved = store.get(SESSION_ENTRY).unwrap().expect("session saved");
    assert!(saved.contains(&device));
    assert!(!saved.contains(PASSWORD));
    let devices = |raw: Raw| async move {
        let (status, body) = raw.call("GET", "/_matrix/client/v3/devices", None).await;
        assert_eq!(status, 200, "{body}");
        let mut ids: Vec<String> =
            body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let devices_before = devices(Raw::restored(&hs.base_url, &saved)).await;
    drop(chat);

    // History before the restart is not reported as new chat.
    let viewer = Raw::login(&hs.base_url, &hs.new_user("viewer"), PASSWORD).await;
    viewer.join(&room.room_id).await;
    viewer.send_text(&room.room_id, "said while OnAir was off").await;

    let chat = Chat::restore(config(&name), &store).await.unwrap().expect("restored");
    assert_eq!(chat.device_id(), device, "same device: no new login");
    assert_eq!(chat.status(), MatrixStatus::Connecting, "restoring touches no network");
    let mut events = chat.subscribe();
    let again = chat.ensure_room("restore").await.expect("the restored session works");
    assert_eq!(again.room_id, room.room_id);
    chat.start_sync();
    let mut status = chat.watch_status();
    wait_status(&mut status, SOON, |s| *s == MatrixStatus::Connected).await.expect("connected");
    let new = viewer.send_text(&room.room_id, "said after the restart").await;
    let ev = next_event(&mut events, SOON, |e| matches!(e, ChatEvent::Message { .. })).await.expect("new chat");
    assert!(matches!(ev, ChatEvent::Message { event_id, .. } if event_id == new), "only new chat is reported");

    // The restore made no new device.
    assert_eq!(devices(Raw::restored(&hs.base_url, &saved)).await, devices_before);

    // Nothing saved, or saved for someone else: nothing restored.
    assert!(Chat::restore(config(&name), &MemoryStore::default()).await.unwrap().is_none());
    assert!(Chat::restore(config("someone_else"), &store).await.unwrap().is_none());
    let mut moved = config(&name);
    moved.homeserver = "https://elsewhere.example".into();
    assert!(Chat::restore(moved, &store).await.unwrap().is_none());
}

#[tokio::test]
async fn a_revoked_session_shows_logged_out_and_logout_forgets_it() {
    let hs = synapse();
    let (chat, _, store) = streamer().await;
    chat.ensure_room("revoked").await.unwrap();
    chat.start_sync();
    let mut status = chat.watch_status();
    wait_status(&mut status, SOON, |s| *s == MatrixStatus::Connected).await.expect("connected");

    // The device is logged out from elsewhere (Element's session list, say).
    let saved = store.get(SESSION_ENTRY).unwrap().unwrap();
    Raw::restored(&hs.base_url, &saved).ok("POST", "/_matrix/client/v3/logout", Some(serde_json::json!({}))).await;
    let err = chat.send("revoked", "anyone?").await.unwrap_err();
    assert!(matches!(err, Error::LoggedOut), "{err:?}");
    assert!(err.to_string().contains("log in again"));
    assert_eq!(chat.status(), MatrixStatus::LoggedOut);

    chat.logout(&store).await.expect("logout");
    assert_eq!(store.get(SESSION_ENTRY).unwrap(), None);
}

#[tokio::test]
async fn a_wrong_password_is_refused_clearly() {
    let hs = synapse();
    let name = hs.new_user("wrong");
    let store = MemoryStore::default();
    let err = Chat::login(config(&name), "not the password", &store).await.unwrap_err();
    assert!(matches!(err, Error::BadCredentials { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong user name or password"), "{err}");
    assert_eq!(store.get(SESSION_ENTRY).unwrap(), None);
}
