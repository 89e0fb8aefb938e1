#!/usr/bin/python3
"""A WHEP (RFC 9725) player on GStreamer's webrtcbin (libnice, libsrtp2, avdec_h264), done by hand
as GStreamer's own whepsrc would, for OnAir's interop tests. Runs on Debian's python3 (python3-gst-1.0).

    gst_play.py URL [SECONDS] [--h264 42e01f,4d001f,640c1f] [--sdp] [--connect-timeout 20]

Adds recvonly transceivers (video: one H.264 payload type per profile of --h264, packetization-mode
1; audio: Opus), creates the offer, waits until ICE gathering is complete (OnAir takes no trickle
PATCH), POSTs it, applies the 201 answer, decodes to fakesinks for SECONDS once connected (a pad
probe counts the decoded frames and reads width/height from the caps), DELETEs the Location and
prints one JSON line on stdout, with the same fields as aiortc_play.py:

    {"ok": true, "status": 201, "connection_state": "connected",
     "video_codec": {"rtpmap": "H264/90000", "profile_level_id": "4d001f", ...},
     "video": {"frames": 150, "width": 640, "height": 360, "first_frame_ms": 900},
     "audio": {"frames": 250, "sample_rate": 48000, "channels": 2, "rms": 4100.0, "tone_hz": 440.0},
     "delete_status": 200, ...}

Exit status 0 when "ok" is true.
"""

import argparse
import json
import sys
import threading
import time
import urllib.parse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

from whep_common import ToneMeter, answer_codecs, http, offered_h264  # noqa: E402

H264_PT = 102
OPUS_PT = 111


class Player:
    def __init__(self, args):
        self.args = args
        self.out = {"ok": False, "url": args.url}
        self.lock = threading.Lock()
        self.start = None
        self.video = {"frames": 0, "width": None, "height": None, "first_frame_ms": None}
        self.audio = {"frames": 0, "sample_rate": None, "channels": None}
        self.tone = ToneMeter()
        self.loop = GLib.MainLoop()
        self.gathered = threading.Event()
        self.connected = threading.Event()
        self.states = []

        self.pipe = Gst.Pipeline.new("whep")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipe.add(self.webrtc)
        self.webrtc.connect("pad-added", self.on_pad_added)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)

        recvonly = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        video = ";".join(
            "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
            f"payload={H264_PT + i},packetization-mode=(string)1,level-asymmetry-allowed=(string)1,"
            f"profile-level-id=(string){plid}"
            for i, plid in enumerate(args.h264.split(","))
        )
        audio = f"application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload={OPUS_PT},encoding-params=(string)2"
        self.webrtc.emit("add-transceiver", recvonly, Gst.Caps.from_string(video))
        self.webrtc.emit("add-transceiver", recvonly, Gst.Caps.from_string(audio))

    # ----- signalling (GLib main loop thread) -----

    def on_gathering(self, webrtc, _pspec):
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.gathered.set()

    def on_connection_state(self, webrtc, _pspec):
        state = webrtc.get_property("connection-state")
        name = state.value_nick
        self.states.append(name)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected.set()

    def create_offer(self):
        def on_offer(promise, _):
            promise.wait()
            reply = promise.get_reply()
            offer = reply.get_value("offer")
            self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

        self.webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))
        return False

    def set_answer(self, sdp_text):
        ok, msg = GstSdp.SDPMessage.new_from_text(sdp_text)
        if ok != GstSdp.SDPResult.OK:
            raise RuntimeError(f"the answer does not parse as SDP: {ok}")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        promise = Gst.Promise.new()
        self.webrtc.emit("set-remote-description", answer, promise)
        promise.wait()
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            self.out["answer_error"] = str(reply.get_value("error"))
        return False

    # ----- media (streaming threads) -----

    def on_pad_added(self, _webrtc, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media")
        if media == "video":
            chain = "rtph264depay ! h264parse ! avdec_h264 ! fakesink name=sink sync=false"
            probe = self.on_video_buffer
        elif media == "audio":
            chain = "rtpopusdepay ! opusdec ! audioconvert ! audio/x-raw,format=S16LE ! fakesink name=sink sync=false"
            probe = self.on_audio_buffer
        else:
            return
        bin_ = Gst.parse_bin_from_description(chain, True)
        self.pipe.add(bin_)
        bin_.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))

    def on_video_buffer(self, pad, _info):
        s = pad.get_current_caps().get_structure(0)
        with self.lock:
            v = self.video
            if v["frames"] == 0 and self.start is not None:
                v["first_frame_ms"] = round((time.monotonic() - self.start) * 1000)
            v["frames"] += 1
            v["width"], v["height"] = s.get_int("width")[1], s.get_int("height")[1]
        return Gst.PadProbeReturn.OK

    def on_audio_buffer(self, pad, info):
        s = pad.get_current_caps().get_structure(0)
        rate, channels = s.get_int("rate")[1], s.get_int("channels")[1]
        buf = info.get_buffer()
        ok, mapped = buf.map(Gst.MapFlags.READ)
        if ok:
            data = bytes(mapped.data)
            buf.unmap(mapped)
        with self.lock:
            self.audio["frames"] += 1
            self.audio["sample_rate"], self.audio["channels"] = rate, channels
            if ok:
                self.tone.add(data, channels)
        return Gst.PadProbeReturn.OK

    # ----- the WHEP exchange (main thread) -----

    def run(self):
        out, args = self.out, self.args
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.idle_add(self.create_offer)
        if not self.gathered.wait(args.connect_timeout):
            out["error"] = "ICE gathering did not complete"
            return out
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        out["ice_gathering_state"] = "complete"
        out["offered_h264"] = offered_h264(offer)

        t_post = time.monotonic()
        status, headers, body = http("POST", args.url, offer.encode(), {"Content-Type": "application/sdp"})
        out["status"] = status
        out["post_ms"] = round((time.monotonic() - t_post) * 1000)
        if args.sdp:
            out["offer_sdp"], out["answer_sdp"] = offer, body
        if status != 201:
            out["error"] = body.strip()
            return out
        location = headers.get("Location")
        out["location"] = location
        if not location:
            out["error"] = "201 without a Location"
            return out
        out.update(answer_codecs(body))

        done = threading.Event()
        GLib.idle_add(lambda: (self.set_answer(body), done.set())[0])
        done.wait(10)
        if "answer_error" in out:
            out["error"] = f"webrtcbin refused the answer: {out['answer_error']}"
            return out
        self.start = time.monotonic()
        if self.connected.wait(args.connect_timeout):
            out["connect_ms"] = round((time.monotonic() - self.start) * 1000)
            time.sleep(args.seconds)
        else:
            out["error"] = f"not connected within {args.connect_timeout} s"
        out["connection_state"] = self.webrtc.get_property("connection-state").value_nick
        out["states"] = list(self.states)

        status, _, _ = http("DELETE", urllib.parse.urljoin(args.url, location))
        out["delete_status"] = status
        with self.lock:
            out["video"] = dict(self.video)
            out["audio"] = {**self.audio, **self.tone.summary(self.audio["sample_rate"])}
        out["ok"] = self.connected.is_set() and "error" not in out
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the WHEP endpoint, http://HOST:PORT/live/<stream>/whep")
    ap.add_argument("seconds", nargs="?", type=float, default=5.0, help="how long to play once connected")
    ap.add_argument("--h264", default="42e01f,4d001f,640c1f", help="H.264 profile-level-ids to offer")
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    ap.add_argument("--sdp", action="store_true", help="put the offer and the answer into the JSON")
    args = ap.parse_args()
    Gst.init(None)
    player = Player(args)
    loop_thread = threading.Thread(target=player.loop.run, daemon=True)
    loop_thread.start()
    try:
        out = player.run()
    except Exception as e:  # noqa: BLE001 - the test wants the reason on stdout, as JSON
        out = {**player.out, "ok": False, "error": f"{type(e).__name__}: {e}"}
    player.pipe.set_state(Gst.State.NULL)
    player.loop.quit()
    print(json.dumps(out), flush=True)
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
