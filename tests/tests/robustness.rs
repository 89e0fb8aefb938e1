//! Bad input never panics the server and never disturbs another stream.

use std::time::Duration;

use onair_tests::rtmp_client::RawPublisher;
use onair_tests::*;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;

/// The LL-HLS media sequence + part of a stream, from its playlist.
async fn position(server: &TestServer, stream: &str) -> Option<(u64, usize)> {
    let r = get(&server.url(&format!("/live/{stream}/llhls.m3u8"))).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let text = r.text();
    let seq: u64 = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?.trim().parse().ok()?;
    let parts = text.lines().filter(|l| l.starts_with("#EXT-X-PART:")).count();
    let segments = text.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64;
    Some((seq + segments, parts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_rtmp_port_leaves_other_streams_playing() {
    let server = TestServer::start().await;
    let rtmp = server.engine.rtmp_addr();
    let good = Publisher::start(&server.signed_url("steady"), &Source::small());
    wait_live(&server, "steady", Duration::from_secs(15)).await;
    let before = position(&server, "steady").await.unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a1e);
    // 1. Random bytes instead of a handshake, and truncated handshakes.
    for len in [0usize, 1, 7, 1536, 1537, 3073, 20_000] {
        let mut s = tokio::net::TcpStream::connect(rtmp).await.unwrap();
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = s.write_all(&junk).await;
        let _ = s.shutdown().await;
    }
    let mut truncated = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    let _ = truncated.write_all(&[3u8; 700]).await;
    drop(truncated);
    // They count against the RTMP connections not yet publishing (4 per IP) until the engine has
    // read them and closed them.
    wait_for("the junk connections to be closed", Duration::from_secs(10), || async {
        (server.engine.rtmp_pending() == 0).then_some(())
    })
    .await;

    // 2. A valid, signed session that then sends a garbage chunk stream.
    let key = server.signed_url("junkchunks").split_once("/live/").unwrap().1.to_owned();
    let mut p = RawPublisher::connect(rtmp, &key).await.expect("signed raw publisher is accepted");
    for _ in 0..50 {
        let junk: Vec<u8> = (0..rng.random_range(1..4096)).map(|_| rng.random()).collect();
        if p.raw(&junk).await.is_err() {
            break;
        }
    }
    drop(p);

    // 2b. A command message without its AMF values, which makes rml_rtmp panic inside: the
    // connection ends, nothing else notices. (A dropped connection's stream waits for its
    // publisher for the grace period, 10 s, before it ends.)
    let key = server.signed_url("panicky").split_once("/live/").unwrap().1.to_owned();
    let mut p = RawPublisher::connect(rtmp, &key).await.expect("signed raw publisher is accepted");
    let _ = p.raw(&[0x06, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0]).await;
    wait_for("the panicky publisher's stream to end", Duration::from_secs(15), || async {
        (status_of(&server.url("/api/streams")).await == 200
            && get(&server.url("/api/streams")).await.ok()?.text().find("panicky").is_none())
        .then_some(())
    })
    .await;
    drop(p);

    // 3. A valid session that sends malformed and truncated FLV tags, then valid-looking junk.
    let key = server.signed_url("badtags").split_once("/live/").unwrap().1.to_owned();
    let mut p = RawPublisher::connect(rtmp, &key).await.expect("signed raw publisher is accepted");
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x17],
        vec![0x17, 0x00],
        vec![0x17, 0x00, 0, 0, 0, 1, 0x64], // truncated AVC config
        vec![0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0xff, 0xff], // SPS length past the end
        vec![0x17, 0x01, 0xff, 0xff, 0xff, 0, 0, 0, 9, 0x65], // NALU length past the end
        vec![0x27, 0x01, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        vec![0x9c, 0x00, 0, 0, 0], // enhanced RTMP header
        vec![0x12, 0x00],          // unsupported codec
    ];
    for (i, b) in bodies.iter().enumerate() {
        p.video(b, i as u32 * 33).await.unwrap();
        p.audio(&b.iter().map(|x| x ^ 0xa0).collect::<Vec<_>>(), i as u32 * 21).await.unwrap();
    }
    p.audio(&[0xaf, 0x00, 0xff], 0).await.unwrap(); // truncated ASC
    p.audio(&[0xaf, 0x00], 0).await.unwrap();
    p.audio(&[0x2f, 0x01, 1, 2, 3], 0).await.unwrap(); // not AAC
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..rng.random_range(0..300)).map(|_| rng.random()).collect();
        if i % 2 == 0 { p.video(&junk, i * 33).await.unwrap() } else { p.audio(&junk, i * 33).await.unwrap() }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(status_of(&server.url("/live/badtags/playlist.m3u8")).await, 500);
    drop(p);

    // The steady stream kept going the whole time, and the server still answers.
    wait_for("the steady stream to keep advancing", Duration::from_secs(10), || async {
        position(&server, "steady").await.filter(|now| *now > before)
    })
    .await;
    wait_segments(&server, "steady", 3).await;
    let errors = ffmpeg_decode(&server.url("/live/steady/llhls.m3u8"), 2.0).await.unwrap();
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(status_of(&server.url("/healthz")).await, 200);
    assert!(logs().contains("dropping media the engine cannot read"), "{}", logs());

    good.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_playlist_and_media_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let p = Publisher::start(&server.signed_url("req"), &Source::small());
    wait_live(&server, "req", Duration::from_secs(15)).await;

    for (path, want) in [
        ("/live/req/llhls.m3u8?_HLS_msn=abc", 400),
        ("/live/req/llhls.m3u8?_HLS_msn=-1", 400),
        ("/live/req/llhls.m3u8?_HLS_part=1", 400),
        ("/live/req/llhls.m3u8?_HLS_msn=999999999999&_HLS_part=0", 400),
        ("/live/req/llhls.m3u8?_HLS_msn=18446744073709551616", 400),
        ("/live/req/nope.m3u8", 404),
        ("/live/req/xx/init.mp4", 404),
        ("/live/req/xx/../../etc/passwd", 404),
        ("/live/nosuch/llhls.m3u8", 404),
        ("/live/req/abc/999999.0.m4s", 404),
        ("/api/streams/bad%20name", 400),
        ("/no/such/page", 404),
        ("/bad%2Fname", 404),
    ] {
        let r = get(&server.url(path)).await.unwrap();
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    // A blocking reload for the next part is answered as soon as it exists.
    let text = get(&server.url("/live/req/llhls.m3u8")).await.unwrap().text();
    let seq: u64 = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap();
    let segments = text.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64;
    let r =
        get(&server.url(&format!("/live/req/llhls.m3u8?_HLS_msn={}&_HLS_part=0", seq + segments + 1))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&format!("{}.0.m4s", seq + segments + 1)), "{}", r.text());
    p.stop().await;
    server.shutdown().await;
}
