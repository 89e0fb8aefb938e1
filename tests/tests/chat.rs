//! The viewer page's guest chat (issue 4, viewer side): headless Chromium (tests/browser/chat.mjs)
//! against a real Synapse (tests/matrix/synapse.sh), with the page served by a real engine and,
//! where the video matters, a real ffmpeg publisher.

use std::time::{Duration, Instant};

use onair_engine::{Config, EngineEvent};
use onair_synapse::{PASSWORD, Raw, Synapse, enc, own_synapse, synapse};
use onair_tests::*;
use serde_json::{Value, json};

/// One Chromium at a time: the machine is small, and the chat must show messages within seconds.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------- the browser ----------

/// `tests/browser/chat.mjs`: one browser context (its localStorage lives as long as this), driven
/// one JSON command at a time.
struct Page(BrowserSession);

impl std::ops::Deref for Page {
    type Target = BrowserSession;
    fn deref(&self) -> &BrowserSession {
        &self.0
    }
}

impl std::ops::DerefMut for Page {
    fn deref_mut(&mut self) -> &mut BrowserSession {
        &mut self.0
    }
}

impl Page {
    async fn launch() -> Page {
        Page(BrowserSession::launch::<&str>("chat.mjs", &[]).await)
    }

    async fn wait_status(&mut self, status: &str, timeout_ms: u64) -> Value {
        self.ok(json!({"op": "waitStatus", "status": status, "timeout": timeout_ms})).await["state"].clone()
    }

    async fn close(self) {
        self.0.close().await;
    }
}

// ---------- Matrix ----------

/// An engine with Matrix chat: logged in to `hs` as `user` (a fresh user's localpart), `stream`
/// its default stream, so it ensures that stream's room at once.
async fn matrix_server(hs: &Synapse, user: &str, password: &str, stream: &str) -> TestServer {
    let mut config = Config { default_stream: stream.into(), ..Default::default() };
    config.matrix.homeserver = hs.base_url.clone();
    config.matrix.user = hs.user_id(user);
    TestServer::start_matrix(config, password).await
}

/// `/api/streams/<stream>` of `server`.
async fn api(server: &TestServer, stream: &str) -> Value {
    get(&server.url(&format!("/api/streams/{stream}"))).await.unwrap().json()
}

/// Waits until the engine knows the stream's room; answers the API's `chat`.
async fn wait_room(server: &TestServer, stream: &str) -> Value {
    wait_for(&format!("the Matrix room of {stream}"), Duration::from_secs(30), || async {
        let st = api(server, stream).await;
        st["chat"]["room_id"].is_string().then(|| st["chat"].clone())
    })
    .await
}

/// Waits for the engine's event about a chat message `body` (from any sender); answers it.
async fn wait_engine_chat(events: &mut tokio::sync::broadcast::Receiver<EngineEvent>, body: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(EngineEvent::Chat { sender, display_name, body: b, .. })) if b == body => {
                return (sender, display_name);
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("engine events closed: {e}"),
            Err(_) => panic!("the engine never reported the chat message {body:?}"),
        }
    }
}

/// Sets the title through OnAir; it holds at once (title changes and room set-up are serialised in
/// the engine, so a name read during set-up cannot overwrite it).
async fn set_title(server: &TestServer, stream: &str, title: &str) {
    server.control().set_title(stream, title).await.unwrap();
    assert_eq!(api(server, stream).await["title"], title, "OnAir keeps the title just set");
}

/// The bodies of a room's newest messages with their senders, oldest first.
async fn room_texts(reader: &Raw, room_id: &str) -> Vec<(String, String)> {
    let (status, events) = reader.messages(room_id).await;
    assert_eq!(status, 200);
    let mut out: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| {
            (e["sender"].as_str().unwrap_or("").to_owned(), e["content"]["body"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    out.reverse();
    out
}

/// A counter of the page's Matrix requests as the browser saw them (`matrixRequests` in chat.mjs).
fn requests(state: &Value, key: &str) -> u64 {
    state["matrixRequests"][key].as_u64().unwrap_or_else(|| panic!("no matrixRequests.{key}: {state}"))
}

/// Requests that follow the room: `/events` (long-polls and quick checks) and `/messages?dir=f` polls.
fn follow_requests(state: &Value) -> u64 {
    requests(state, "events") + requests(state, "messagesForward")
}

fn texts(state: &Value) -> Vec<String> {
    state["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap_or("").to_owned()).collect()
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reads_writes_follows_and_is_reused_while_the_stream_is_offline() {
    let _serial = SERIAL.lock().await;
    let hs = synapse();
    let user = hs.new_user("streamer");
    let stream = "offshow";
    let server = matrix_server(hs, &user, PASSWORD, stream).await;
    let chat = wait_room(&server, stream).await;
    assert_eq!(chat["alias"], "#onair_offshow:localhost", "{chat}");
    let room = chat["room_id"].as_str().unwrap().to_owned();
    let control = server.control();
    let mut events = control.subscribe();
    // The streamer's account in another Matrix client.
    let streamer = Raw::login(&hs.base_url, &user, PASSWORD).await;
    streamer.set_displayname("The Streamer").await;
    set_title(&server, stream, "Off show: pilot").await;
    control.send_chat(stream, "welcome <b>everyone</b>").await.unwrap();
    streamer.send_text(&room, "second message").await;

    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/offshow")})).await;
    let st = page.wait_status("ready", 20_000).await;

    // OnAir's room, its name as the title, the history in order, as text.
    assert_eq!(st["chat"]["resolvedBy"], "room_id", "{st}");
    assert_eq!(st["chat"]["roomId"], room.as_str(), "{st}");
    page.ok(json!({"op": "waitTitle", "title": "Off show: pilot", "timeout": 5000})).await;
    let st = page.state().await;
    assert_eq!(st["documentTitle"], "Off show: pilot", "{st}");
    assert_eq!(st["playerState"], "offline", "the stream is offline: {st}");
    assert_eq!(texts(&st), ["welcome <b>everyone</b>", "second message"], "{st}");
    let first = &st["messages"][0];
    assert_eq!(first["senderName"], "The Streamer", "{st}");
    assert_eq!(first["html"], "welcome &lt;b&gt;everyone&lt;/b&gt;", "bodies are text, never HTML: {st}");
    assert_eq!(st["nativeLink"], "https://matrix.to/#/%23onair_offshow%3Alocalhost", "{st}");
    assert_eq!(st["inputDisabled"], false, "{st}");
    let guest = st["chat"]["userId"].as_str().expect("a guest account").to_owned();
    assert_eq!(st["chat"]["reusedSession"], false, "{st}");
    assert_eq!(st["localStorageKeys"], json!([format!("onair-matrix-guest:{}", hs.base_url)]), "{st}");

    // New events are long-polled (`/events`), not polled once a second: while the room is quiet
    // the page asks next to nothing (1 s polling would make 6 requests here).
    assert_eq!(st["chat"]["follow"]["mode"], "events", "{st}");
    let before = page.state().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = page.state().await;
    let asked = follow_requests(&after) - follow_requests(&before);
    assert!(asked <= 2, "{asked} requests in 6 s while the room was quiet: {after}");
    assert_eq!(after["chat"]["follow"]["inFlight"], true, "a long-poll waits on the homeserver: {after}");
    assert!(requests(&after, "eventsLongPolls") >= 1, "{after}");

    // The guest writes (joining as a guest on the way): OnAir and other Matrix clients get it.
    let sent = page.ok(json!({"op": "send", "text": "hello from the guest"})).await;
    assert_eq!(sent["message"]["sender"], guest.as_str(), "{sent}");
    let (sender, name) = wait_engine_chat(&mut events, "hello from the guest").await;
    assert_eq!(sender, guest);
    assert_eq!(name, st["chat"]["displayName"].as_str().unwrap(), "the guest's name reaches OnAir");
    let texts_now = room_texts(&streamer, &room).await;
    assert!(texts_now.contains(&(guest.clone(), "hello from the guest".to_owned())), "{texts_now:?}");

    // Messages from OnAir and from another Matrix user show up live.
    let t = Instant::now();
    control.send_chat(stream, "thanks, from OnAir").await.unwrap();
    let got = page.ok(json!({"op": "waitMessage", "body": "thanks, from OnAir", "timeout": 10_000})).await;
    assert_eq!(got["message"]["senderName"], "The Streamer", "{got}");
    eprintln!("a message sent by OnAir reached the page in {:?}", t.elapsed());
    let bob = Raw::login(&hs.base_url, &hs.new_user("bob"), PASSWORD).await;
    bob.set_displayname("Bob").await;
    bob.join(&room).await;
    let t = Instant::now();
    bob.send_text(&room, "hi guest, Bob here").await;
    let got = page.ok(json!({"op": "waitMessage", "body": "hi guest, Bob here", "timeout": 10_000})).await;
    let took = t.elapsed();
    eprintln!("a message from another client reached the page in {took:?}");
    assert!(took < Duration::from_secs(2), "a live message took {took:?} (the page long-polls: it should be at once)");
    assert_eq!(got["message"]["senderName"], "Bob", "{got}");
    let st = page.state().await;
    assert_eq!(st["chat"]["follow"]["mode"], "events", "{st}");
    assert_eq!(st["chat"]["follow"]["messagePolls"], 0, "no /messages polling: {st}");
    assert_eq!(requests(&st, "messagesForward"), 0, "no /messages?dir=f polling: {st}");
    assert!(st["chat"]["follow"]["longPolls"].as_u64().unwrap() >= 2, "{st}");

    // A room name set in another client is the new title, live (and OnAir's too).
    let t = Instant::now();
    streamer.set_name(&room, "Off show: episode 2").await;
    page.ok(json!({"op": "waitTitle", "title": "Off show: episode 2", "timeout": 10_000})).await;
    eprintln!("a room name set elsewhere reached the page in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "the title took {:?}", t.elapsed());
    wait_for("OnAir's title to follow the room name", Duration::from_secs(10), || async {
        (api(&server, stream).await["title"] == "Off show: episode 2").then_some(())
    })
    .await;
    // A title set in OnAir, likewise.
    control.set_title(stream, "Off show: episode 3").await.unwrap();
    page.ok(json!({"op": "waitTitle", "title": "Off show: episode 3", "timeout": 10_000})).await;

    // A display name changed elsewhere shows on that member's messages.
    bob.set_displayname("Robert").await;
    page.ok(json!({
        "op": "until",
        "js": "[...document.querySelectorAll('.chat-msg')].some(li => li.querySelector('.chat-text')?.textContent === 'hi guest, Bob here' && li.querySelector('.chat-sender')?.textContent === 'Robert')",
        "timeout": 10_000,
    }))
    .await;

    // The guest picks a name: its member event in the room carries it, and OnAir shows it.
    page.ok(json!({"op": "rename", "name": "Viewer Vic"})).await;
    let member_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&guest));
    wait_for("the guest's new name in the room", Duration::from_secs(10), || async {
        let (status, body) = streamer.call("GET", &member_path, None).await;
        (status == 200 && body["displayname"] == "Viewer Vic").then_some(())
    })
    .await;
    page.ok(json!({"op": "send", "text": "now with a name"})).await;
    let (_, name) = wait_engine_chat(&mut events, "now with a name").await;
    assert_eq!(name, "Viewer Vic");

    // A reload reuses the guest (localStorage) and shows the history again, own messages included.
    page.ok(json!({"op": "reload"})).await;
    let st = page.wait_status("ready", 20_000).await;
    assert_eq!(st["chat"]["userId"], guest.as_str(), "the same guest after a reload: {st}");
    assert_eq!(st["chat"]["reusedSession"], true, "{st}");
    assert_eq!(st["chat"]["displayName"], "Viewer Vic", "{st}");
    assert_eq!(st["navigations"], 2, "{st}");
    page.ok(json!({"op": "waitTitle", "title": "Off show: episode 3", "timeout": 5000})).await;
    let st = page.state().await;
    let shown = texts(&st);
    for want in ["welcome <b>everyone</b>", "hello from the guest", "hi guest, Bob here", "now with a name"] {
        assert!(shown.iter().any(|t| t == want), "{want:?} missing after the reload: {shown:?}");
    }
    assert!(
        st["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "hello from the guest" && m["senderName"] == "Viewer Vic"),
        "{st}"
    );
    page.ok(json!({"op": "send", "text": "back again"})).await;
    assert_eq!(wait_engine_chat(&mut events, "back again").await.0, guest, "still the same guest");

    let st = page.state().await;
    assert_eq!(st["pageErrors"], json!([]), "{st}");
    assert_eq!(st["consoleErrors"], json!([]), "{st}");
    page.ok(json!({"op": "screenshot", "path": artifacts_dir().join("chat.png")})).await;

    // Stopping the chat (as leaving the page does) aborts the waiting long-poll, and nothing
    // follows it.
    // (In one go, so the long-poll cannot end in between: the fetch counters just before stop().)
    let js = "window.__onairEventsFetch.pending > 0 && window.onair.chat.state.follow.inFlight && (f => (window.onair.chat.client.stop(), f))({...window.__onairEventsFetch})";
    let before = page.ok(json!({"op": "until", "js": js, "timeout": 10_000})).await["value"].clone();
    assert_eq!(before["maxPending"], 1, "one long-poll at a time: {before}");
    let stopped = page
        .ok(json!({"op": "until", "js": "!window.onair.chat.state.follow.inFlight && window.__onairEventsFetch.pending === 0 && window.__onairEventsFetch", "timeout": 5000}))
        .await;
    let aborted = stopped["value"]["aborted"].as_u64().unwrap();
    assert_eq!(aborted, before["aborted"].as_u64().unwrap() + 1, "stop() aborts the long-poll: {stopped}");
    let stopped = page.state().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = page.state().await;
    assert_eq!(follow_requests(&st), follow_requests(&stopped), "nothing after stop(): {st}");
    assert_eq!(st["pageErrors"], json!([]), "{st}");
    page.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_works_while_the_stream_plays() {
    let _serial = SERIAL.lock().await;
    let hs = synapse();
    let user = hs.new_user("livestreamer");
    let stream = "liveshow";
    let server = matrix_server(hs, &user, PASSWORD, stream).await;
    let room = wait_room(&server, stream).await["room_id"].as_str().unwrap().to_owned();
    let control = server.control();
    let mut events = control.subscribe();
    // A member who joined long ago and never spoke: neither her join nor a message of hers is in
    // the history the page reads (the newest 50 events).
    let streamer = Raw::login(&hs.base_url, &user, PASSWORD).await;
    let carol = Raw::login(&hs.base_url, &hs.new_user("carol"), PASSWORD).await;
    carol.set_displayname("Carol").await;
    carol.join(&room).await;
    for i in 0..50 {
        streamer.send_text(&room, &format!("earlier {i}")).await;
    }
    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    wait_live(&server, stream, Duration::from_secs(20)).await;

    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/liveshow")})).await;
    let played = page.ok(json!({"op": "waitPlaying", "minAdvance": 2, "timeout": 30_000})).await;
    let st = page.wait_status("ready", 20_000).await;
    assert_eq!(st["chat"]["roomId"], room.as_str(), "{st}");
    // No title set: the room is named after the stream, like the API's title.
    assert_eq!(st["title"], "liveshow", "{st}");
    assert_eq!(api(&server, stream).await["title"], "liveshow");

    let sent = page.ok(json!({"op": "send", "text": "watching live"})).await;
    let guest = sent["message"]["sender"].as_str().unwrap().to_owned();
    assert_eq!(wait_engine_chat(&mut events, "watching live").await.0, guest);
    control.send_chat(stream, "thanks for watching").await.unwrap();
    page.ok(json!({"op": "waitMessage", "body": "thanks for watching", "timeout": 10_000})).await;
    // `/events` has no lazy-loaded members: her name is looked up when she first speaks.
    carol.send_text(&room, "Carol was here all along").await;
    let got = page.ok(json!({"op": "waitMessage", "body": "Carol was here all along", "timeout": 10_000})).await;
    assert_eq!(got["message"]["senderName"], "Carol", "{got}");
    page.ok(json!({"op": "screenshot", "path": artifacts_dir().join("chat-live.png")})).await;

    // Auto-scroll follows new messages at the bottom, and leaves a reader who scrolled up alone.
    for i in 0..30 {
        streamer.send_text(&room, &format!("filler {i}")).await;
    }
    page.ok(json!({"op": "waitMessage", "body": "filler 29", "timeout": 10_000})).await;
    let list = "document.querySelector('.chat-messages')";
    let at_bottom = format!("(l => l.scrollHeight - l.scrollTop - l.clientHeight < 50)({list})");
    page.ok(json!({"op": "until", "js": format!("{list}.scrollHeight > {list}.clientHeight + 200 && {at_bottom}"), "timeout": 5000}))
        .await;
    page.ok(json!({"op": "until", "js": format!("({list}.scrollTop = 0, true)")})).await;
    control.send_chat(stream, "while you read").await.unwrap();
    page.ok(json!({"op": "waitMessage", "body": "while you read", "timeout": 10_000})).await;
    let v = page
        .ok(json!({"op": "until", "js": format!("({{top: {list}.scrollTop, jump: !document.querySelector('.chat-jump').hidden}})")}))
        .await;
    assert_eq!(v["value"], json!({"top": 0, "jump": true}), "a reader scrolled up stays put: {v}");
    page.ok(json!({"op": "until", "js": "(document.querySelector('.chat-jump').click(), true)"})).await;
    page.ok(json!({"op": "until", "js": at_bottom, "timeout": 5000})).await;

    // The video kept playing throughout.
    let st = page.state().await;
    assert_eq!(st["playerState"], "playing", "{st}");
    assert!(st["video"]["currentTime"].as_f64().unwrap() > played["video"]["t"].as_f64().unwrap(), "{st}");
    page.close().await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_that_does_not_resolve_falls_back_to_the_room_directory() {
    let _serial = SERIAL.lock().await;
    let hs = synapse();
    // The stream's room exists under another alias (an older setup), named after the stream; a
    // room whose name only contains that is not taken.
    let owner = Raw::login(&hs.base_url, &hs.new_user("dirowner"), PASSWORD).await;
    owner.create_room("decoy_dirshow", "dirshow (old)").await;
    let room = owner.create_room("elsewhere_dirshow", "dirshow").await;
    owner.send_text(&room, "found through the directory").await;
    // OnAir's own login fails (wrong password): it can tell pages the homeserver and the alias
    // it expects, not a room id, and that alias does not resolve.
    let user = hs.new_user("forgetful");
    let server = matrix_server(hs, &user, "not the password", "dirshow").await;
    let chat = wait_for("the chat field without a room", Duration::from_secs(20), || async {
        let chat = api(&server, "dirshow").await["chat"].clone();
        (chat["alias"].is_string() && !chat["status"].as_str().unwrap_or("").starts_with("connecting")).then_some(chat)
    })
    .await;
    assert_eq!(chat["alias"], "#onair_dirshow:localhost", "{chat}");
    assert!(chat["room_id"].is_null(), "{chat}");
    let (status, _) = Raw::anonymous(&hs.base_url)
        .call("GET", &format!("/_matrix/client/v3/directory/room/{}", enc("#onair_dirshow:localhost")), None)
        .await;
    assert_eq!(status, 404, "the alias must not resolve");

    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/dirshow")})).await;
    let st = page.wait_status("ready", 20_000).await;
    assert_eq!(st["chat"]["resolvedBy"], "directory", "{st}");
    assert_eq!(st["chat"]["roomId"], room.as_str(), "{st}");
    page.ok(json!({"op": "waitMessage", "body": "found through the directory", "timeout": 5000})).await;
    page.ok(json!({"op": "send", "text": "guest in the directory room"})).await;
    let texts_now = room_texts(&owner, &room).await;
    assert!(texts_now.iter().any(|(_, b)| b == "guest in the directory room"), "{texts_now:?}");
    page.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_down_the_panel_says_so_the_api_title_shows_and_the_video_plays() {
    let _serial = SERIAL.lock().await;
    let hs = own_synapse("down", false);
    let user = hs.new_user("downstreamer");
    let stream = "downshow";
    let server = matrix_server(&hs, &user, PASSWORD, stream).await;
    let room = wait_room(&server, stream).await["room_id"].as_str().unwrap().to_owned();
    let control = server.control();
    set_title(&server, stream, "Down show").await;
    control.send_chat(stream, "before the outage").await.unwrap();
    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    wait_live(&server, stream, Duration::from_secs(20)).await;
    hs.stop();

    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/downshow")})).await;
    let st = page.wait_status("unreachable", 20_000).await;
    assert!(st["statusText"].as_str().unwrap().contains("cannot be reached"), "{st}");
    assert_eq!(st["inputDisabled"], true, "{st}");
    // The title from /api/streams, and the video plays.
    page.ok(json!({"op": "waitTitle", "title": "Down show", "timeout": 5000})).await;
    assert_eq!(api(&server, stream).await["title"], "Down show");
    page.ok(json!({"op": "waitPlaying", "minAdvance": 2, "timeout": 30_000})).await;

    // Back: the chat recovers by itself (the page retries with backoff, at most 10 s apart).
    hs.resume();
    let st = page.wait_status("ready", 30_000).await;
    assert_eq!(st["statusText"], "", "{st}");
    page.ok(json!({"op": "waitMessage", "body": "before the outage", "timeout": 5000})).await;

    // Down again while chatting: said so, the history stays, the video plays on; then back.
    hs.stop();
    let st = page.wait_status("unreachable", 20_000).await;
    assert!(texts(&st).iter().any(|t| t == "before the outage"), "{st}");
    assert_eq!(st["playerState"], "playing", "{st}");
    hs.resume();
    let st = page.wait_status("ready", 30_000).await;
    assert_eq!(st["chat"]["follow"]["mode"], "events", "still long-polling after the outage: {st}");
    let streamer = Raw::login(&hs.base_url, &user, PASSWORD).await;
    streamer.send_text(&room, "after the outage").await;
    page.ok(json!({"op": "waitMessage", "body": "after the outage", "timeout": 10_000})).await;
    let st = page.state().await;
    assert_eq!(requests(&st, "messagesForward"), 0, "{st}");
    let sent = page.ok(json!({"op": "send", "text": "guest after the outage"})).await;
    let guest = sent["message"]["sender"].as_str().unwrap().to_owned();
    assert!(room_texts(&streamer, &room).await.contains(&(guest, "guest after the outage".to_owned())));
    page.close().await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_homeserver_without_long_polling_is_polled_and_the_chat_works_the_same() {
    let _serial = SERIAL.lock().await;
    let hs = synapse();
    let user = hs.new_user("pollstreamer");
    let stream = "pollshow";
    let server = matrix_server(hs, &user, PASSWORD, stream).await;
    let room = wait_room(&server, stream).await["room_id"].as_str().unwrap().to_owned();
    let control = server.control();
    let mut events = control.subscribe();
    set_title(&server, stream, "Poll show").await;
    control.send_chat(stream, "before the page").await.unwrap();

    // The browser answers `/events` as a homeserver without it would (404 M_UNRECOGNIZED).
    let mut page = Page::launch().await;
    let refuse = json!([{"path": "/_matrix/client/v3/events", "status": 404, "errcode": "M_UNRECOGNIZED"}]);
    page.ok(json!({"op": "open", "url": server.url("/pollshow"), "refuse": refuse})).await;
    let st = page.wait_status("ready", 20_000).await;
    assert_eq!(st["chat"]["follow"]["mode"], "messages", "falls back to /messages polling: {st}");
    page.ok(json!({"op": "waitTitle", "title": "Poll show", "timeout": 5000})).await;
    page.ok(json!({"op": "waitMessage", "body": "before the page", "timeout": 5000})).await;

    // Live messages, titles and the guest's own messages, as with long-polling.
    let streamer = Raw::login(&hs.base_url, &user, PASSWORD).await;
    let t = Instant::now();
    streamer.send_text(&room, "polled in").await;
    page.ok(json!({"op": "waitMessage", "body": "polled in", "timeout": 10_000})).await;
    assert!(t.elapsed() < Duration::from_secs(4), "a live message took {:?}", t.elapsed());
    streamer.set_name(&room, "Poll show: renamed").await;
    page.ok(json!({"op": "waitTitle", "title": "Poll show: renamed", "timeout": 10_000})).await;
    let sent = page.ok(json!({"op": "send", "text": "guest while polling"})).await;
    let guest = sent["message"]["sender"].as_str().unwrap().to_owned();
    assert_eq!(wait_engine_chat(&mut events, "guest while polling").await.0, guest);

    let st = page.state().await;
    assert_eq!(st["chat"]["follow"]["mode"], "messages", "{st}");
    assert_eq!(requests(&st, "eventsLongPolls"), 0, "{st}");
    assert!(requests(&st, "messagesForward") >= 2, "{st}");
    assert!(st["chat"]["follow"]["messagePolls"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(st["pageErrors"], json!([]), "{st}");
    assert_eq!(st["consoleErrors"], json!([]), "{st}");
    page.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_homeserver_that_refuses_guests_is_explained_and_the_video_plays() {
    let _serial = SERIAL.lock().await;
    let hs = own_synapse("noguests", true);
    let (status, body) =
        Raw::anonymous(&hs.base_url).call("POST", "/_matrix/client/v3/register?kind=guest", Some(json!({}))).await;
    assert_eq!(status, 403, "this homeserver must refuse guests: {body}");
    let user = hs.new_user("strict");
    let stream = "strictshow";
    let server = matrix_server(&hs, &user, PASSWORD, stream).await;
    wait_room(&server, stream).await;
    set_title(&server, stream, "Strict show").await;
    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    wait_live(&server, stream, Duration::from_secs(20)).await;

    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/strictshow")})).await;
    let st = page.wait_status("guests-forbidden", 20_000).await;
    assert!(st["statusText"].as_str().unwrap().contains("does not allow guests"), "{st}");
    assert_eq!(
        st["nativeLink"], "https://matrix.to/#/%23onair_strictshow%3Alocalhost",
        "the native option stays: {st}"
    );
    assert_eq!(st["inputDisabled"], true, "{st}");
    assert_eq!(st["localStorageKeys"], json!([]), "{st}");
    page.ok(json!({"op": "waitTitle", "title": "Strict show", "timeout": 5000})).await;
    page.ok(json!({"op": "waitPlaying", "minAdvance": 2, "timeout": 30_000})).await;
    page.close().await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_matrix_the_chat_panel_is_hidden() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    assert!(api(&server, "plain").await["chat"].is_null(), "no Matrix configured");
    let mut page = Page::launch().await;
    page.ok(json!({"op": "open", "url": server.url("/plain")})).await;
    let v = page
        .ok(json!({"op": "until", "js": "window.onair && window.onair.chat && window.onair.chat.enabled === false", "timeout": 10_000}))
        .await;
    assert_eq!(v["value"], true);
    let st = page.state().await;
    assert_eq!(st["panelHidden"], true, "{st}");
    assert_eq!(st["title"], "plain", "{st}");
    assert!(st["chat"].is_null(), "{st}");
    page.close().await;
    server.shutdown().await;
}
