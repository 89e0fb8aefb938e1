"""What the WHEP players of tests/whep/ share: HTTP, reading the answer, measuring the test tone."""

import array
import urllib.error
import urllib.request


def http(method, url, body=None, headers=None):
    """A blocking HTTP request: (status, headers (case-insensitive), body text); HTTP errors are
    answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def media_section(sdp, kind):
    """The answer's codec for `kind`: (rtpmap, fmtp) of the first payload type of its m= line;
    (None, None) when the section is missing or rejected (port 0)."""
    section, pt, rtpmap, fmtp = None, None, None, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            fields = line[2:].split()
            section = fields[0]
            if section == kind and fields[1] != "0" and len(fields) > 3:
                pt = fields[3]
        elif section == kind and pt is not None:
            if line.startswith(f"a=rtpmap:{pt} "):
                rtpmap = line.split(" ", 1)[1]
            elif line.startswith(f"a=fmtp:{pt} "):
                fmtp = line.split(" ", 1)[1]
    return rtpmap, fmtp


def answer_codecs(sdp):
    """The negotiated video and audio codecs of an answer, for the JSON report."""
    out = {}
    for kind in ("video", "audio"):
        rtpmap, fmtp = media_section(sdp, kind)
        codec = {"rtpmap": rtpmap, "fmtp": fmtp}
        if fmtp and "profile-level-id=" in fmtp:
            codec["profile_level_id"] = fmtp.split("profile-level-id=")[1].split(";")[0]
        out[f"{kind}_codec"] = codec
    return out


def offered_h264(sdp):
    """The H.264 profile-level-ids an offer lists."""
    return sorted({p.split("profile-level-id=")[1][:6] for p in sdp.split() if "profile-level-id=" in p})


class ToneMeter:
    """Level and pitch of decoded audio (channel 0 of packed signed 16-bit PCM). The pitch comes
    from zero crossings with a little hysteresis, so noise around 0 does not count: the test
    publisher sends a 440 Hz sine, and resampled audio must keep that pitch."""

    def __init__(self):
        self.samples = 0
        self._sq = 0.0
        self._crossings = 0
        self._last_sign = None

    def add(self, pcm_bytes, channels):
        pcm = array.array("h", pcm_bytes[: len(pcm_bytes) // 2 * 2])[::channels]
        for s in pcm:
            self._sq += s * s
            sign = 1 if s > 64 else -1 if s < -64 else None
            if sign is not None:
                if self._last_sign is not None and sign != self._last_sign:
                    self._crossings += 1
                self._last_sign = sign
        self.samples += len(pcm)

    def summary(self, sample_rate):
        if not self.samples or not sample_rate:
            return {}
        return {
            "rms": round((self._sq / self.samples) ** 0.5, 1),
            "tone_hz": round(self._crossings / 2 / (self.samples / sample_rate), 1),
        }
