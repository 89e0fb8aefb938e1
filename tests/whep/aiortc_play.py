#!/usr/bin/env python3
"""A WHEP (RFC 9725) player on aiortc, an independent WebRTC stack, for OnAir's interop tests.

    aiortc_play.py URL [SECONDS] [--no-delete] [--connect-timeout 20] [--sdp]

POSTs an SDP offer with recvonly video and audio transceivers (ICE gathered completely first: OnAir
takes no trickle PATCH), applies the 201 answer, decodes what arrives for SECONDS once connected,
then DELETEs the session's Location (or, with --no-delete, only closes the peer connection, which
sends a DTLS close_notify) and prints one JSON line on stdout:

    {"ok": true, "status": 201, "location": "...", "connection_state": "connected",
     "video": {"codec": "H264/90000", "fmtp": "...", "profile_level_id": "42e01f",
               "frames": 150, "width": 640, "height": 360, "first_frame_ms": 812},
     "audio": {"codec": "opus/48000/2", "frames": 250, "sample_rate": 48000, "channels": 2,
               "rms": 4100.0, "tone_hz": 440.2},
     "delete_status": 200, ...}

`tone_hz` is the pitch of the decoded audio from its zero crossings (the test publisher sends a
440 Hz sine, so this shows resampled audio keeps its pitch). Exit status 0 when JSON was printed
with "ok": true, 1 otherwise (the JSON then says why).
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.parse

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from whep_common import ToneMeter, answer_codecs, http, offered_h264

# aioice leaves 127.0.0.1 out of its host candidates. The servers under test listen on loopback and
# a test machine may have no other interface, so offer it too.
_host_addresses = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4, use_ipv6):
    addresses = _host_addresses(use_ipv4, use_ipv6)
    if use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


aioice.ice.get_host_addresses = _with_loopback


class Counters:
    def __init__(self):
        self.start = None
        self.video = {"frames": 0, "width": None, "height": None, "first_frame_ms": None, "sizes": {}}
        self.audio = {"frames": 0, "sample_rate": None, "channels": None}
        self.tone = ToneMeter()

    async def consume(self, track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.on_video(frame)
                else:
                    self.on_audio(frame)
        except MediaStreamError:
            pass

    def on_video(self, frame):
        v = self.video
        if v["frames"] == 0 and self.start is not None:
            v["first_frame_ms"] = round((time.monotonic() - self.start) * 1000)
        v["frames"] += 1
        v["width"], v["height"] = frame.width, frame.height
        key = f"{frame.width}x{frame.height}"
        v["sizes"][key] = v["sizes"].get(key, 0) + 1

    def on_audio(self, frame):
        a = self.audio
        a["frames"] += 1
        a["sample_rate"] = frame.sample_rate
        a["channels"] = len(frame.layout.channels)
        if frame.format.name == "s16":  # packed: what aiortc's Opus decoder gives
            self.tone.add(bytes(frame.planes[0])[: frame.samples * a["channels"] * 2], a["channels"])

    def audio_summary(self):
        return {**self.audio, **self.tone.summary(self.audio["sample_rate"])}


async def play(args):
    out = {"ok": False, "url": args.url}
    loop = asyncio.get_running_loop()
    # No STUN: aiortc would otherwise ask stun.l.google.com, and a loopback test needs none.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    counters = Counters()
    consumers = []
    connected = asyncio.Event()
    states = []

    @pc.on("connectionstatechange")
    def on_state():
        states.append(pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()

    @pc.on("track")
    def on_track(track):
        consumers.append(asyncio.ensure_future(counters.consume(track)))

    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())  # returns once ICE gathering is complete
    out["ice_gathering_state"] = pc.iceGatheringState
    offer = pc.localDescription.sdp
    out["offered_h264"] = offered_h264(offer)

    t_post = time.monotonic()
    status, headers, body = await loop.run_in_executor(
        None, lambda: http("POST", args.url, offer.encode(), {"Content-Type": "application/sdp"})
    )
    out["status"] = status
    out["post_ms"] = round((time.monotonic() - t_post) * 1000)
    if status != 201:
        out["error"] = body.strip()
        await pc.close()
        return out
    location = headers.get("Location")
    out["location"] = location
    out["content_type"] = headers.get("Content-Type")
    out["link"] = headers.get_all("Link")
    if args.sdp:
        out["offer_sdp"], out["answer_sdp"] = offer, body
    if not location:
        out["error"] = "201 without a Location"
        await pc.close()
        return out
    delete_url = urllib.parse.urljoin(args.url, location)

    out.update(answer_codecs(body))

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    counters.start = time.monotonic()
    try:
        await asyncio.wait_for(connected.wait(), args.connect_timeout)
        out["connect_ms"] = round((time.monotonic() - counters.start) * 1000)
    except asyncio.TimeoutError:
        out["error"] = f"not connected within {args.connect_timeout} s"
    if connected.is_set():
        await asyncio.sleep(args.seconds)
    out["connection_state"] = pc.connectionState
    out["states"] = states

    if args.no_delete:
        out["left_by"] = "close"
    else:
        out["left_by"] = "DELETE"
        status, _, body = await loop.run_in_executor(None, lambda: http("DELETE", delete_url))
        out["delete_status"] = status
    await pc.close()
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)

    out["video"] = counters.video
    out["audio"] = counters.audio_summary()
    out["ok"] = connected.is_set() and "error" not in out
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the WHEP endpoint, http://HOST:PORT/live/<stream>/whep")
    ap.add_argument("seconds", nargs="?", type=float, default=5.0, help="how long to play once connected")
    ap.add_argument("--no-delete", action="store_true", help="leave with pc.close() only, no DELETE")
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    ap.add_argument("--sdp", action="store_true", help="put the offer and the answer into the JSON")
    args = ap.parse_args()
    try:
        out = asyncio.run(play(args))
    except Exception as e:  # noqa: BLE001 - the test wants the reason on stdout, as JSON
        out = {"ok": False, "url": args.url, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
