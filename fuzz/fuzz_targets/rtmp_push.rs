//! The restream client `onair_engine::restream::push::PushSession` fed what a hostile or broken
//! destination sends, in chunks whose sizes come from the input, with the stream's tags pushed
//! and its output drained between chunks, until the first error.
//!
//! Input: byte 0 picks the mode (bit 0: answer the client's C0+C1 with a valid server handshake
//! first, so the body reaches the RTMP chunk stream; bits 1-7: the chunk size, 0 = all at once);
//! the rest is the body.
//!
//! Checks: no panic; the queue never holds more than its bound plus one tag. rml_rtmp 0.8 itself
//! panics on some chunk streams (fuzz/README.md, "Findings"); the session catches those and ends
//! the connection as an error, but libfuzzer-sys' hook aborts first: run with
//! `ONAIR_FUZZ_ALLOW_RML_PANICS=1` to let panics inside rml_rtmp unwind to that catch.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair_engine::hub::{FlvTag, SequenceHeaders, TagKind};
use onair_engine::restream::push::{PushSession, Target};
use onair_fuzz::allow_rml_panics;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

const QUEUE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    allow_rml_panics();
    let Some((&mode, body)) = data.split_first() else { return };
    let t0 = Instant::now();
    let target = Target { app: "app".into(), stream: "key".into(), tc_url: "rtmp://h:1935/app".into() };
    let headers = SequenceHeaders { video: Some(Bytes::from_static(b"\x17\x00\x00\x00\x00")), audio: None };
    let mut c = PushSession::new(target, headers, QUEUE, t0);
    if mode & 1 == 1 {
        let c0c1 = c.poll_output(t0).expect("C0+C1");
        let mut server = Handshake::new(PeerType::Server);
        let s012 = match server.process_bytes(&c0c1) {
            Ok(HandshakeProcessResult::InProgress { response_bytes })
            | Ok(HandshakeProcessResult::Completed { response_bytes, .. }) => response_bytes,
            Err(_) => return,
        };
        if c.handle_input(&s012).is_err() {
            return;
        }
    }
    let size = match mode >> 1 {
        0 => body.len().max(1),
        n => usize::from(n),
    };
    for (i, chunk) in body.chunks(size).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 33);
        let tag = FlvTag {
            kind: if i % 3 == 0 { TagKind::Audio } else { TagKind::Video },
            dts: i as u64 * 33,
            keyframe: i % 30 == 1,
            header: false,
            body: Bytes::from(vec![0x27u8; 700]),
        };
        c.push(Arc::new(tag));
        assert!(c.queued_bytes() <= QUEUE + 700, "the queue is bounded");
        while c.poll_output(now).is_some() {}
        if c.handle_input(chunk).is_err() || c.handle_timeout(now).is_err() {
            return;
        }
    }
    let _ = c.finish();
});
