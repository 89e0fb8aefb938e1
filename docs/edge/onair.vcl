# OnAir behind Varnish: many LL-HLS players, one request per object to OnAir.
# Tested by tests/tests/edge.rs (which uses this very file) with Varnish 7.1; see docs/edge.md.
#
# Change the backend to OnAir's `http` address; run e.g.
#   varnishd -a :8081 -f /etc/varnish/onair.vcl -s malloc,256m
# and set OnAir's hls.public_base_url to this server's URL.
vcl 4.1;

import std;

backend onair {
    .host = "127.0.0.1";
    .port = "8080";
    # OnAir holds a blocking reload or the preload-hinted part up to 10 s.
    .first_byte_timeout = 15s;
    .between_bytes_timeout = 15s;
}

sub vcl_recv {
    if (req.method == "GET" || req.method == "HEAD") {
        if (req.url ~ "^/live/[^/]+/(llhls|playlist)\.m3u8(\?|$)"
            || req.url ~ "^/live/[^/]+/[^/]+/[^/?]+\.(m4s|mp4)(\?|$)") {
            # The same for every viewer: no cookie or credential plays a part.
            unset req.http.Cookie;
            unset req.http.Authorization;
            # The key is the URL (vcl_hash's default: URL and Host), query included, with the
            # parameters in one order: all players asking _HLS_msn=M&_HLS_part=P share one
            # object, and requests for it wait for the one fetch (request coalescing).
            set req.url = std.querysort(req.url);
            return (hash);
        }
    }
    # Pages, API, WHEP: straight to OnAir.
    return (pass);
}

sub vcl_backend_response {
    # Pass bodies on as they arrive: a pending part comes as headers at once and its body when
    # complete; everyone waiting for it gets it then.
    set beresp.do_stream = true;
    if (beresp.status >= 400 && beresp.ttl <= 0s) {
        # An error OnAir says not to store ("no-cache": a part that does not exist yet). Mark
        # the URL uncacheable for one second only (not the built-in two minutes), so requests
        # for it are coalesced again as soon as it exists.
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    if (bereq.url ~ "\.m3u8") {
        # A playlist past its lifetime is not served stale: it would start players behind.
        set beresp.grace = 0s;
    }
    # Lifetimes come from OnAir's Cache-Control (s-maxage, else max-age).
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
